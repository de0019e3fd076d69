package synsent

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2C4 020011AC:22B3 02 00000001:00000000 01:00000064 00000001     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A2C6 030011AC:22B3 02 00000001:00000000 01:00000064 00000001     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0100007F:A2C8 020011AC:22B3 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
	container := netip.MustParseAddrPort("172.17.0.2:8883")
	got, err := parse(strings.NewReader(table), map[netip.AddrPort]bool{container: true})
	if err != nil {
		t.Fatal(err)
	}
	// Only line 1: SYN-SENT toward 172.17.0.2:8883. Line 2 waits for
	// another address, line 3 is established, line 0 listens.
	want := Conn{Local: netip.MustParseAddrPort("127.0.0.1:41668"), Remote: container}
	if len(got) != 1 || got[0] != want {
		t.Errorf("parse = %v, want [%v]", got, want)
	}
	six := `  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000100007F:A2C4 0000000000000000FFFF0000020011AC:22B3 02 0
`
	got, err = parse(strings.NewReader(six), nil)
	if err != nil || len(got) != 1 || got[0].Remote != container {
		t.Errorf("parse tcp6 = %v, %v; want the IPv4-mapped %v", got, err, container)
	}
	if _, err := parse(strings.NewReader("h\n 0: zz:1 00:0 02\n"), nil); err == nil {
		t.Error("a malformed address parsed")
	}
}

// TestWatchSeesAHeldConnection makes a real connection wait in SYN-SENT on
// loopback: a listener that never accepts, with a backlog of 0, drops the
// SYNs of connections beyond its full queue, and their clients wait.
func TestWatchSeesAHeldConnection(t *testing.T) {
	if _, err := sample(Tables, nil); err != nil {
		t.Skip(err)
	}
	addr := fullListener(t)
	w, err := Start(t.Context(), 2*time.Millisecond, func() []netip.AddrPort { return []netip.AddrPort{addr} })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	before := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for range 4 { // fill the queue, then be held
		go func() {
			var d net.Dialer
			if c, err := d.DialContext(ctx, "tcp", addr.String()); err == nil {
				defer c.Close()
				<-ctx.Done()
			}
		}()
	}
	select {
	case <-w.Seen():
	case <-ctx.Done():
		t.Fatal("no connection seen waiting in SYN-SENT")
	}
	if held := w.HeldAfter(before); held.Before(before) {
		t.Errorf("HeldAfter = %v, want after %v", held, before)
	}
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
// never accepts.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
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
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
}
