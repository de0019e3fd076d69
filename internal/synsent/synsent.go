// Package synsent watches this host's TCP connections that have sent their
// SYN and wait for the answer, toward a few addresses, from the kernel's
// tables (/proc/net/tcp and tcp6). It believes a network path shows itself
// in what it holds: a connection that stays in SYN-SENT toward a server
// that is already listening is held by the path, not by the server. It
// only reads; it never sends a packet, so watching cannot provoke what it
// watches (its reads cost a little CPU: pause it when nothing is expected).
package synsent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Tables are the kernel's TCP tables it reads.
var Tables = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// stateSynSent is SYN-SENT in the tables' st column.
const stateSynSent = 0x02

// Conn is one connection, by its two ends.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Hold is a connection seen waiting for the answer to its SYN.
type Hold struct {
	Conn
	First, Last time.Time // first and last time it was seen waiting
}

// Watch samples the tables until Stop.
type Watch struct {
	targets func() []netip.AddrPort
	stop    context.CancelFunc
	done    chan struct{}

	seen   chan struct{} // signalled when a new connection is seen waiting
	active atomic.Bool   // sample only while true

	mu    sync.Mutex
	holds map[Conn]*Hold
	err   error
}

// Active starts (true) or pauses (false) the sampling; a new Watch samples.
// Pausing it between the moments that matter keeps its reading of the
// tables, linear in the host's connections, off the machine the rest of
// the time.
func (w *Watch) Active(on bool) { w.active.Store(on) }

// Seen is signalled whenever a connection is first seen waiting.
func (w *Watch) Seen() <-chan struct{} { return w.seen }

// Start reads the tables every interval and remembers every connection in
// SYN-SENT toward one of targets (asked anew at every sample, so that they
// can follow a server that moved). It fails at once when the tables cannot
// be read (not Linux, or another network namespace's view is needed).
func Start(ctx context.Context, interval time.Duration, targets func() []netip.AddrPort) (*Watch, error) {
	if _, err := sample(Tables, nil); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watch{targets: targets, stop: cancel, done: make(chan struct{}), seen: make(chan struct{}, 1), holds: map[Conn]*Hold{}}
	w.active.Store(true)
	go w.loop(ctx, interval)
	return w, nil
}

func (w *Watch) loop(ctx context.Context, interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		want := map[netip.AddrPort]bool{}
		if w.active.Load() {
			for _, a := range w.targets() {
				want[a] = true
			}
		}
		if len(want) > 0 && w.active.Load() {
			conns, err := sample(Tables, want)
			at := time.Now()
			w.mu.Lock()
			if err != nil && w.err == nil {
				w.err = err
			}
			for _, c := range conns {
				if h := w.holds[c]; h != nil {
					h.Last = at
				} else {
					w.holds[c] = &Hold{Conn: c, First: at, Last: at}
					select {
					case w.seen <- struct{}{}:
					default:
					}
				}
			}
			w.mu.Unlock()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// HeldAfter returns the last moment a connection was seen waiting, among
// those seen waiting at or after t, or zero when there is none.
func (w *Watch) HeldAfter(t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, h := range w.holds {
		if !h.Last.Before(t) && h.Last.After(last) {
			last = h.Last
		}
	}
	return last
}

// Forget drops connections last seen waiting before t.
func (w *Watch) Forget(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, h := range w.holds {
		if h.Last.Before(t) {
			delete(w.holds, c)
		}
	}
}

// Stop ends the sampling and returns the first error a sample met, if any.
func (w *Watch) Stop() error {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// sample reads the tables and returns the connections in SYN-SENT toward
// one of want (all of them when want is nil). A table that does not exist
// (no IPv6) is skipped; none at all is an error.
func sample(tables []string, want map[netip.AddrPort]bool) ([]Conn, error) {
	var out []Conn
	read := 0
	for _, path := range tables {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("synsent: %w", err)
		}
		conns, err := parse(f, want)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("synsent: %s: %w", path, err)
		}
		out = append(out, conns...)
		read++
	}
	if read == 0 {
		return nil, fmt.Errorf("synsent: none of %v can be read: not a Linux host", tables)
	}
	return out, nil
}

// parse reads one table in the kernel's format:
//
//	sl  local_address rem_address   st ...
//	 0: 0100007F:1F90 00000000:0000 0A ...
//
// Addresses are hex, in the kernel's byte order per 32-bit word; ports are
// hex numbers.
func parse(r io.Reader, want map[netip.AddrPort]bool) ([]Conn, error) {
	sc := bufio.NewScanner(r)
	var out []Conn
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 {
			continue
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil || st != stateSynSent {
			continue
		}
		remote, err := addrPort(f[2])
		if err != nil {
			return nil, err
		}
		if want != nil && !want[remote] {
			continue
		}
		local, err := addrPort(f[1])
		if err != nil {
			return nil, err
		}
		out = append(out, Conn{Local: local, Remote: remote})
	}
	return out, sc.Err()
}

// addrPort decodes "0100007F:1F90" (127.0.0.1:8080) or its 32-digit IPv6
// form.
func addrPort(b []byte) (netip.AddrPort, error) {
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", b)
	}
	raw, err := hex.DecodeString(string(b[:i]))
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: not hex IPv4 or IPv6", b)
	}
	port, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port: %w", b, err)
	}
	// Each 32-bit word is in the kernel's (little-endian) byte order.
	for w := 0; w < len(raw); w += 4 {
		raw[w], raw[w+1], raw[w+2], raw[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
