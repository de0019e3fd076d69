package synsent

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/mttrlab/mttr/internal/needs"
)

var (
	target = netip.MustParseAddrPort("172.17.0.2:8883")
	other  = netip.MustParseAddrPort("172.17.0.3:8883")
	proxy  = netip.MustParseAddrPort("172.17.0.1:40000")
)

func event(typ conntrack.Event, from, to netip.AddrPort, state uint8) conntrack.Event {
	f := conntrack.NewFlow(6, 0, from.Addr(), to.Addr(), from.Port(), to.Port(), 0, 0)
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: state}
	typ.Flow = &f
	return typ
}

var (
	newEv     = conntrack.Event{Type: conntrack.EventNew}
	updateEv  = conntrack.Event{Type: conntrack.EventUpdate}
	destroyEv = conntrack.Event{Type: conntrack.EventDestroy}
)

const (
	stSynSent     = tcpSynSent
	stSynRecv     = 2
	stEstablished = 3
	stClose       = 8
)

// TestHandle guards the rule of a hold: a connection toward a target whose
// SYN stays unanswered for HeldMin or more, from its SYN to the event that
// takes it out of SYN-SENT; one answered sooner, one toward another
// address, and one whose SYN left while the watch was paused are not holds.
func TestHandle(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		ev     conntrack.Event
		after  time.Duration
		active bool
	}
	for _, tc := range []struct {
		name        string
		steps       []step
		first, last time.Duration // of the one hold; -1: none
	}{
		{"answered at once", []step{
			{event(newEv, proxy, target, stSynSent), 0, true},
			{event(updateEv, proxy, target, stSynRecv), HeldMin - time.Microsecond, true},
		}, -1, -1},
		{"answered after HeldMin", []step{
			{event(newEv, proxy, target, stSynSent), 0, true},
			{event(updateEv, proxy, target, stSynRecv), time.Second, true},
			{event(updateEv, proxy, target, stEstablished), time.Second + time.Millisecond, true},
		}, 0, time.Second},
		{"refused after HeldMin", []step{
			{event(newEv, proxy, target, stSynSent), 0, true},
			{event(updateEv, proxy, target, stClose), 2 * time.Second, true},
		}, 0, 2 * time.Second},
		{"destroyed while waiting", []step{
			{event(newEv, proxy, target, stSynSent), 0, true},
			{event(destroyEv, proxy, target, stSynSent), 3 * time.Second, true},
		}, 0, 3 * time.Second},
		{"an update still in SYN-SENT keeps it waiting", []step{
			{event(newEv, proxy, target, stSynSent), 0, true},
			{event(updateEv, proxy, target, stSynSent), time.Second, true},
			{event(updateEv, proxy, target, stSynRecv), 2 * time.Second, true},
		}, 0, 2 * time.Second},
		{"another address", []step{
			{event(newEv, proxy, other, stSynSent), 0, true},
			{event(updateEv, proxy, other, stSynRecv), time.Second, true},
		}, -1, -1},
		{"SYN while paused", []step{
			{event(newEv, proxy, target, stSynSent), 0, false},
			{event(updateEv, proxy, target, stSynRecv), time.Second, true},
		}, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &Watch{
				targets:  func() []netip.AddrPort { return []netip.AddrPort{target} },
				released: make(chan struct{}, 1), sent: make(chan struct{}, 1), waiting: map[Conn]time.Time{}, holds: map[Conn]*Hold{},
				now: func() time.Time { return t0.Add(time.Hour) },
			}
			for _, s := range tc.steps {
				w.Active(s.active)
				w.handle(s.ev, t0.Add(s.after))
			}
			if tc.first < 0 {
				if len(w.holds) != 0 {
					t.Fatalf("holds %v, want none", w.holds)
				}
				if got := w.HeldAfter(t0); !got.IsZero() {
					t.Errorf("HeldAfter = %v, want zero", got)
				}
				return
			}
			h := w.holds[Conn{Local: proxy, Remote: target}]
			if len(w.holds) != 1 || h == nil || !h.First.Equal(t0.Add(tc.first)) || !h.Last.Equal(t0.Add(tc.last)) {
				t.Fatalf("holds %v, want one from +%v to +%v", w.holds, tc.first, tc.last)
			}
			if got := w.HeldAfter(t0); !got.Equal(t0.Add(tc.last)) {
				t.Errorf("HeldAfter = %v, want +%v", got.Sub(t0), tc.last)
			}
			if got := w.HeldAfter(t0.Add(tc.last + time.Nanosecond)); !got.IsZero() {
				t.Errorf("HeldAfter its release = %v, want zero", got)
			}
			w.Forget(t0.Add(tc.last + time.Nanosecond))
			if len(w.holds) != 0 {
				t.Errorf("Forget kept %v", w.holds)
			}
		})
	}
}

// TestHeldAfterCountsAStillWaitingConnection guards that a connection still
// unanswered after HeldMin is held now, and one younger than HeldMin is not.
func TestHeldAfterCountsAStillWaitingConnection(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0.Add(HeldMin - time.Microsecond)
	w := &Watch{
		targets:  func() []netip.AddrPort { return []netip.AddrPort{target} },
		released: make(chan struct{}, 1), sent: make(chan struct{}, 1), waiting: map[Conn]time.Time{}, holds: map[Conn]*Hold{},
		now: func() time.Time { return now },
	}
	w.Active(true)
	w.handle(event(newEv, proxy, target, stSynSent), t0)
	if got := w.HeldAfter(t0); !got.IsZero() {
		t.Errorf("HeldAfter before HeldMin = %v, want zero", got)
	}
	now = t0.Add(time.Second)
	if got := w.HeldAfter(t0); !got.Equal(now) {
		t.Errorf("HeldAfter while waiting = %v, want now (%v)", got, now)
	}
	w.Forget(t0.Add(time.Second))
	if len(w.waiting) != 1 {
		t.Error("Forget dropped a connection that still waits")
	}
	w.Forget(t0.Add(synSentTimeout + time.Second))
	if len(w.waiting) != 0 {
		t.Error("Forget kept a connection waiting past connection tracking's own timeout")
	}
}

// startOrSkip starts a watch, or skips the test where connection events
// cannot be had (not root, no connection tracking), unless Docker is
// required: an engine on this host turns tracking on, and CI runs as root.
func startOrSkip(t *testing.T, targets func() []netip.AddrPort) *Watch {
	t.Helper()
	w, err := Start(t.Context(), targets)
	if err != nil {
		needs.Conntrack.Missing(t, err.Error())
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

// TestWatchSeesAHeldConnection makes a real connection wait in SYN-SENT on
// loopback: a listener with a backlog of 0 holds one connection in its
// queue and drops the SYN of the next. Once the watch has seen that SYN,
// the test accepts the first, and the next SYN TCP sends (after its first
// retransmission timeout) is answered: a hold of about a second. A
// connection answered at once to another listener is not a hold.
func TestWatchSeesAHeldConnection(t *testing.T) {
	addr, fd := fullListener(t)
	quick, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer quick.Close()
	quickAddr := netip.MustParseAddrPort(quick.Addr().String())
	w := startOrSkip(t, func() []netip.AddrPort { return []netip.AddrPort{addr, quickAddr} })
	before := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var d net.Dialer
	for _, to := range []netip.AddrPort{quickAddr, addr} { // answered; then queued
		c, err := d.DialContext(ctx, "tcp4", to.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	heldFrom := make(chan netip.AddrPort, 1)
	go func() { // its SYN is dropped: the queue is full
		if c, err := d.DialContext(ctx, "tcp4", addr.String()); err == nil {
			heldFrom <- netip.MustParseAddrPort(c.LocalAddr().String())
			defer c.Close()
			<-ctx.Done()
		}
	}()
	for waiting := false; !waiting; { // until the watch has the third one waiting
		select {
		case <-w.Sent():
		case <-ctx.Done():
			t.Fatal("the watch saw no SYN toward the full listener")
		}
		w.mu.Lock()
		n := 0
		for c := range w.waiting {
			if c.Remote == addr {
				n++
			}
		}
		w.mu.Unlock()
		waiting = n > 0
	}
	nfd, _, err := syscall.Accept(fd) // room for the SYN sent again
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(nfd)
	select {
	case <-w.Released():
	case <-ctx.Done():
		t.Fatal("no held connection let go")
	}
	held := w.HeldAfter(before)
	if held.Before(before) {
		t.Errorf("HeldAfter = %v, want after %v", held, before)
	}
	var from netip.AddrPort
	select {
	case from = <-heldFrom:
	case <-ctx.Done():
		t.Fatal("the held connection never connected")
	}
	w.mu.Lock()
	if w.holds[Conn{Local: from, Remote: addr}] == nil {
		t.Errorf("holds %v lack the held connection from %v", w.holds, from)
	}
	for c, h := range w.holds {
		if c.Remote != addr {
			t.Errorf("hold toward %v, which answered at once", c.Remote)
		}
		if h.Last.Sub(h.First) < HeldMin {
			t.Errorf("hold of %v, below HeldMin", h.Last.Sub(h.First))
		}
	}
	w.mu.Unlock()
	cancel()
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
	w.Forget(time.Now().Add(time.Second))
	if held := w.HeldAfter(before); !held.IsZero() {
		t.Errorf("HeldAfter after Forget = %v", held)
	}
}

// fullListener listens on a free loopback port with a backlog of 0 and
// does not accept; it returns the address and the socket.
func fullListener(t *testing.T) (netip.AddrPort, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Shutdown wakes an Accept blocked on it; Close alone would not.
	t.Cleanup(func() { _ = syscall.Shutdown(fd, syscall.SHUT_RDWR); syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port)), fd
}
