// Package synsent watches this host's TCP connections toward a few
// addresses that have sent their SYN and wait for the answer. It believes a
// network path shows itself in what it holds: a connection that stays in
// SYN-SENT toward a server that is already listening is held by the path,
// not by the server.
//
// It learns of connections from the kernel's connection-tracking events
// (netlink, NFNLGRP_CONNTRACK_*): the moment a SYN leaves and the moment
// its answer (or a reset) comes back. Nothing is polled, so watching costs
// only the handling of the host's connection events; reading the TCP tables
// instead walks the kernel's whole connection hash on every read. Listening
// needs CAP_NET_ADMIN and connection tracking active in this network
// namespace (Docker's NAT rules turn it on); Start fails when either is
// missing. It only listens; it never sends a packet toward the targets, so
// watching cannot provoke what it watches.
package synsent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// HeldMin is how long a connection must wait for the answer to its SYN to
// count as held: far longer than any answer on this host takes (tens of
// microseconds), far shorter than a path's stall (a neighbour entry's
// retry, 1 s; a SYN's first retransmission, 1 s).
const HeldMin = 5 * time.Millisecond

// checkTimeout bounds Start's wait for the event of its own test connection.
const checkTimeout = 2 * time.Second

// tcpSynSent is conntrack's TCP state for a connection whose SYN is
// unanswered (TCP_CONNTRACK_SYN_SENT).
const tcpSynSent = 1

// Conn is one connection, by its two ends.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Hold is a connection that waited at least HeldMin for the answer to its
// SYN.
type Hold struct {
	Conn
	First, Last time.Time // its SYN left; it was let go (answered or refused)
}

// Watch follows connection events until Stop.
type Watch struct {
	targets func() []netip.AddrPort
	active  atomic.Bool
	ct      *conntrack.Conn
	stop    context.CancelFunc
	done    chan struct{}

	released chan struct{} // signalled when a held connection is let go
	sent     chan struct{} // signalled when a SYN toward a target is seen

	mu      sync.Mutex
	waiting map[Conn]time.Time // SYN left toward a target, no answer yet
	holds   map[Conn]*Hold
	err     error
	now     func() time.Time
}

// Active starts (true) or pauses (false) the watching of new connections; a
// new Watch watches. Connections whose SYN left while it was paused are not
// followed.
func (w *Watch) Active(on bool) { w.active.Store(on) }

// Released is signalled whenever a held connection is let go.
func (w *Watch) Released() <-chan struct{} { return w.released }

// Sent is signalled whenever a connection toward a target is seen sending
// its SYN.
func (w *Watch) Sent() <-chan struct{} { return w.sent }

// Start listens to this network namespace's connection events and follows
// every TCP connection toward one of targets (asked anew at each new
// connection, so that they can follow a server that moved). Before it
// returns it makes one loopback connection of its own and waits for its
// event: it fails when events cannot be had (no CAP_NET_ADMIN, connection
// tracking off, not Linux), rather than watch in silence.
func Start(ctx context.Context, targets func() []netip.AddrPort) (*Watch, error) {
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("synsent: connection tracking: %w", err)
	}
	// Room for a reconnect storm's events while this process is busy.
	_ = ct.SetReadBuffer(4 << 20)
	events := make(chan conntrack.Event, 1024)
	errs, err := ct.Listen(events, 1, []netfilter.NetlinkGroup{
		netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy,
	})
	if err != nil {
		ct.Close()
		return nil, fmt.Errorf("synsent: connection events (they need CAP_NET_ADMIN): %w", err)
	}
	if err := awaitOwnEvent(ctx, events); err != nil {
		closeDraining(ct, events)
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watch{
		targets: targets, ct: ct, stop: cancel, done: make(chan struct{}),
		released: make(chan struct{}, 1), sent: make(chan struct{}, 1),
		waiting: map[Conn]time.Time{}, holds: map[Conn]*Hold{}, now: time.Now,
	}
	w.active.Store(true)
	go w.loop(ctx, events, errs)
	return w, nil
}

// awaitOwnEvent connects to a loopback listener of its own and waits for
// that connection's event.
func awaitOwnEvent(ctx context.Context, events <-chan conntrack.Event) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("synsent: check: %w", err)
	}
	defer ln.Close()
	want := netip.MustParseAddrPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", want.String())
	if err != nil {
		return fmt.Errorf("synsent: check: %w", err)
	}
	defer c.Close()
	for {
		select {
		case ev := <-events:
			if conn, ok := tcpConn(ev); ok && conn.Remote == want {
				return nil
			}
		case <-ctx.Done():
			return errors.New("synsent: no connection event for a loopback connection within " +
				checkTimeout.String() + ": connection tracking is off in this network namespace")
		}
	}
}

func (w *Watch) loop(ctx context.Context, events <-chan conntrack.Event, errs <-chan error) {
	defer close(w.done)
	for {
		select {
		case ev := <-events:
			w.handle(ev, w.now())
		case err := <-errs:
			w.mu.Lock()
			if w.err == nil {
				w.err = fmt.Errorf("synsent: %w", err)
			}
			w.mu.Unlock()
			<-ctx.Done()
			closeDraining(w.ct, events)
			return
		case <-ctx.Done():
			closeDraining(w.ct, events)
			return
		}
	}
}

// closeDraining closes ct while taking what its worker still hands over,
// since Close waits for a worker that may be blocked on a full channel.
func closeDraining(ct *conntrack.Conn, events <-chan conntrack.Event) {
	closed := make(chan struct{})
	go func() { ct.Close(); close(closed) }()
	for {
		select {
		case <-events:
		case <-closed:
			return
		}
	}
}

// tcpConn is ev's connection as its originator sees it; ok is false for
// anything but TCP.
func tcpConn(ev conntrack.Event) (Conn, bool) {
	if ev.Flow == nil || ev.Flow.TupleOrig.Proto.Protocol != 6 {
		return Conn{}, false
	}
	t := ev.Flow.TupleOrig
	return Conn{
		Local:  netip.AddrPortFrom(t.IP.SourceAddress.Unmap(), t.Proto.SourcePort),
		Remote: netip.AddrPortFrom(t.IP.DestinationAddress.Unmap(), t.Proto.DestinationPort),
	}, true
}

// handle follows one event seen at at: a new connection toward a target
// starts waiting; any later event of a waiting connection that leaves
// SYN-SENT (answered, reset, destroyed) lets it go, and a wait of HeldMin
// or more is a hold.
func (w *Watch) handle(ev conntrack.Event, at time.Time) {
	conn, ok := tcpConn(ev)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev.Type {
	case conntrack.EventNew:
		if w.active.Load() && w.isTarget(conn.Remote) {
			w.waiting[conn] = at
			select {
			case w.sent <- struct{}{}:
			default:
			}
		}
	case conntrack.EventUpdate, conntrack.EventDestroy:
		first, waiting := w.waiting[conn]
		if !waiting || (ev.Type == conntrack.EventUpdate && ev.Flow.ProtoInfo.TCP != nil && ev.Flow.ProtoInfo.TCP.State == tcpSynSent) {
			return
		}
		delete(w.waiting, conn)
		if at.Sub(first) >= HeldMin {
			w.holds[conn] = &Hold{Conn: conn, First: first, Last: at}
			select {
			case w.released <- struct{}{}:
			default:
			}
		}
	}
}

func (w *Watch) isTarget(a netip.AddrPort) bool {
	for _, t := range w.targets() {
		if t == a {
			return true
		}
	}
	return false
}

// HeldAfter returns the last moment a connection was held, among those held
// at or after t: when it was let go, or now for one still waiting after
// HeldMin. Zero when there is none.
func (w *Watch) HeldAfter(t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, h := range w.holds {
		if !h.Last.Before(t) && h.Last.After(last) {
			last = h.Last
		}
	}
	now := w.now()
	for _, first := range w.waiting {
		if now.Sub(first) >= HeldMin && !now.Before(t) && now.After(last) {
			last = now
		}
	}
	return last
}

// synSentTimeout is how long connection tracking keeps a connection whose
// SYN is unanswered (nf_conntrack_tcp_timeout_syn_sent's default): one
// still waiting after that had its end's event lost.
const synSentTimeout = 2 * time.Minute

// Forget drops connections let go before t, and any still waiting since
// synSentTimeout before t.
func (w *Watch) Forget(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, h := range w.holds {
		if h.Last.Before(t) {
			delete(w.holds, c)
		}
	}
	for c, first := range w.waiting {
		if t.Sub(first) > synSentTimeout {
			delete(w.waiting, c)
		}
	}
}

// Stop ends the watching and returns the first error the events met, if
// any.
func (w *Watch) Stop() error {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
