package netfault

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// BrokerName is the name the devices of a readdress run reach the broker
// by. The run's hosts file answers it; .test is reserved for testing, so
// no real resolver answers it too.
const BrokerName = "broker.mttr.test"

// Hosts is a hosts file whose entry for one name the run changes: what the
// devices' resolver answers. Our devices look the name up in it at every
// dial; an external client sees it as its /etc/hosts (the client package
// mounts it there), which the C library and most runtimes read again at
// every lookup. A client that resolves the name once keeps the old answer.
type Hosts struct {
	f    *os.File
	name string
	at   int64 // where the name's line starts: it is rewritten in place
}

// addrWidth is room for any IP address in text (IPv6's longest is 39):
// the name's line keeps its length, so one write replaces it.
const addrWidth = 39

// NewHosts writes a hosts file in dir with name at addr, besides the
// usual localhost entries. Close removes it.
func NewHosts(dir, name string, addr netip.Addr) (*Hosts, error) {
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s%d-*", hostsPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	head := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	h := &Hosts{f: f, name: name, at: int64(len(head))}
	if _, err := f.WriteString(head); err == nil {
		err = h.Set(addr)
	}
	if err == nil {
		err = f.Chmod(0o644) // readable by a client that runs as another user
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("hosts file %s: %w", f.Name(), err)
	}
	return h, nil
}

// hostsPrefix starts a hosts file's name, before the process id of the
// run that wrote it.
const hostsPrefix = "mttr-hosts-"

// RemoveStaleHosts removes the hosts files in dir (the system's temporary
// directory when empty) of runs whose process is gone (alive says false:
// killed before they could remove them), and returns their paths.
func RemoveStaleHosts(dir string, alive func(pid int) bool) ([]string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	files, err := filepath.Glob(filepath.Join(dir, hostsPrefix+"*-*"))
	if err != nil {
		return nil, fmt.Errorf("stale hosts files: %w", err)
	}
	var removed []string
	for _, f := range files {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(f), hostsPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil || alive(n) || !ownFile(f) {
			continue
		}
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) && !os.IsPermission(err) {
			return removed, fmt.Errorf("remove stale hosts file: %w", err)
		}
		removed = append(removed, f)
	}
	return removed, nil
}

// ownFile reports whether this process's user owns f: another user's
// runs are theirs to tidy.
func ownFile(f string) bool {
	fi, err := os.Stat(f)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// Path is the file's path.
func (h *Hosts) Path() string { return h.f.Name() }

// Name is the name the file answers.
func (h *Hosts) Name() string { return h.name }

// Set makes the name answer addr from now on, with one write of the
// line's fixed length: a reader sees the old line or the new one.
func (h *Hosts) Set(addr netip.Addr) error {
	line := fmt.Sprintf("%-*s %s\n", addrWidth, addr, h.name)
	if _, err := h.f.WriteAt([]byte(line), h.at); err != nil {
		return fmt.Errorf("hosts file %s: %w", h.f.Name(), err)
	}
	return nil
}

// Lookup reads the file, as a resolver that honours it does at every
// lookup, and returns the name's address.
func (h *Hosts) Lookup(name string) (netip.Addr, error) {
	// Set rewrites the line in place: a read that overlaps it could see
	// half of each. Two reads that agree saw one of them.
	var data []byte
	for range 5 {
		again, err := os.ReadFile(h.f.Name())
		if err != nil {
			return netip.Addr{}, fmt.Errorf("lookup %s: %w", name, err)
		}
		if bytes.Equal(again, data) {
			break
		}
		data = again
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		for _, n := range fields[1:] {
			if strings.EqualFold(n, name) {
				return netip.ParseAddr(fields[0])
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("lookup %s: not in %s", name, filepath.Base(h.f.Name()))
}

// Dial resolves the host of addr in the file, then dials through dial
// (nil: from any local port): every call sees the file's current answer.
func (h *Hosts) Dial(dial Dial) Dial {
	if dial == nil {
		dial = Ports{}.Dial
	}
	return func(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %q: %w", addr, err)
		}
		ip, err := h.Lookup(host)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		return dial(ctx, d, network, net.JoinHostPort(ip.String(), port))
	}
}

// Close removes the file.
func (h *Hosts) Close() error {
	h.f.Close()
	return os.Remove(h.f.Name())
}
