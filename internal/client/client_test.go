package client

import (
	"bufio"
	"context"
	"errors"
	"github.com/mttrlab/mttr/internal/device"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mttrlab/mttr/internal/host"
	"github.com/mttrlab/mttr/internal/netfault"
)

type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	written chan struct{} // signalled after every write, if not nil
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.written != nil {
		select {
		case s.written <- struct{}{}:
		default:
		}
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// exited waits (up to 10 s) until process pid, not necessarily our child,
// has exited, using a pidfd, which becomes readable when it does.
func exited(t *testing.T, pid int) bool {
	t.Helper()
	gone, err := host.AwaitExit(pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return gone
}

func waitExit(t *testing.T, s *Supervisor) Exit {
	t.Helper()
	select {
	case e := <-s.Exits():
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("no exit reported")
	}
	return Exit{}
}

func TestEnvAndPrefixedLog(t *testing.T) {
	var log syncBuffer
	s, err := Supervise([]Spec{{Name: "dev-2", Command: `echo "id=$MTTR_DEVICE_ID"; echo oops >&2; printf partial`, Env: []string{"MTTR_DEVICE_ID=dev-2"}}}, &log, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	e := waitExit(t, s)
	if e.Err != nil || !e.Restarted || e.Name != "dev-2" {
		t.Errorf("first exit %+v", e)
	}
	for _, want := range []string{"dev-2 | id=dev-2\n", "dev-2 | oops\n", "dev-2 | partial\n"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}

func TestRestartOnceThenFail(t *testing.T) {
	var log syncBuffer
	dir := t.TempDir()
	count := filepath.Join(dir, "starts")
	s, err := Supervise([]Spec{{Name: "d", Command: `echo start >> ` + count + `; echo "dying now"; exit 3`}}, &log, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	first := waitExit(t, s)
	if !first.Restarted || s.Failed() != nil {
		t.Fatalf("first exit %+v, failed %v", first, s.Failed())
	}
	second := waitExit(t, s)
	if second.Restarted {
		t.Fatalf("second exit restarted again: %+v", second)
	}
	err = s.Failed()
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "dying now") {
		t.Errorf("Failed() = %v", err)
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "start"); n != 2 {
		t.Errorf("started %d times, want 2", n)
	}
}

// TestStopLeavesNoOrphans starts a client with a background grandchild,
// stops it, and checks that both are gone: the grandchild ignores SIGTERM,
// so only the SIGKILL to the process group after the grace period ends it.
func TestStopLeavesNoOrphans(t *testing.T) {
	log := syncBuffer{written: make(chan struct{}, 1)}
	s, err := Supervise([]Spec{{Name: "d", Command: `(trap '' TERM; echo "child $$ $(sh -c 'echo $PPID')"; exec sleep 300) & echo "shell $$"; wait`}}, &log, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var shell, child int
	timeout := time.After(10 * time.Second)
	for shell == 0 || child == 0 {
		select {
		case <-log.written:
		case <-timeout:
			t.Fatalf("did not see both processes start:\n%s", log.String())
		}
		sc := bufio.NewScanner(strings.NewReader(log.String()))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 4 && f[2] == "shell" {
				shell, _ = strconv.Atoi(f[3])
			}
			if len(f) >= 5 && f[2] == "child" {
				child, _ = strconv.Atoi(f[4])
			}
		}
	}
	if syscall.Kill(child, 0) != nil {
		t.Fatalf("grandchild %d not running", child)
	}
	s.Stop(context.Background())
	if !exited(t, shell) {
		t.Errorf("shell %d still alive", shell)
	}
	if !exited(t, child) {
		t.Errorf("grandchild %d survived Stop", child)
	}
	select {
	case e := <-s.Exits():
		t.Errorf("a stopped client was reported as exiting on its own: %+v", e)
	default:
	}
}

func TestSecretsMasked(t *testing.T) {
	var log syncBuffer
	const key = "c2VjcmV0LWtleS0xMjM="
	s, err := Supervise([]Spec{{Name: "d", Command: `echo "key=$KEY"; exit 3`, Env: []string{"KEY=" + key}, Secrets: []string{key}}}, &log, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	waitExit(t, s)
	waitExit(t, s)
	if strings.Contains(log.String(), key) || !strings.Contains(log.String(), "d | key="+Masked) {
		t.Errorf("log:\n%s", log.String())
	}
	if err := s.Failed(); err == nil || strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "key="+Masked) {
		t.Errorf("Failed() = %v", err)
	}
}

// TestHostsFile starts a client that sees a hosts file of the run's as its
// /etc/hosts, changes the name's answer while it runs, and checks that the
// client's lookups follow it and that this machine's /etc/hosts is not
// touched.
func TestHostsFile(t *testing.T) {
	args := []string{"--mount", "true"}
	if os.Geteuid() != 0 {
		args = []string{"--mount", "--map-root-user", "true"}
	}
	if out, err := exec.Command("unshare", args...).CombinedOutput(); err != nil {
		t.Skipf("this machine cannot make a mount namespace: unshare %s: %v: %s", strings.Join(args, " "), err, out)
	}
	before, _ := os.ReadFile("/etc/hosts")
	h, err := netfault.NewHosts(t.TempDir(), netfault.BrokerName, netip.MustParseAddr("10.9.8.7"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fifo := filepath.Join(t.TempDir(), "go")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	log := syncBuffer{written: make(chan struct{}, 1)}
	cmd := `getent hosts ` + netfault.BrokerName + ` | sed 's/^/first /'; read _ < ` + fifo + `; getent hosts ` + netfault.BrokerName + ` | sed 's/^/then /'; getent hosts localhost >/dev/null && echo localhost ok; sleep 60`
	s, err := Supervise([]Spec{{Name: "d", Command: cmd, Hosts: h.Path()}}, &log, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	waitLog := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !strings.Contains(log.String(), want) {
			select {
			case <-log.written:
			case <-deadline:
				t.Fatalf("the client's log lacks %q:\n%s", want, log.String())
			}
		}
	}
	waitLog("first 10.9.8.7")
	if err := h.Set(netip.MustParseAddr("10.9.8.8")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog("then 10.9.8.8")
	waitLog("localhost ok")
	if after, _ := os.ReadFile("/etc/hosts"); string(after) != string(before) {
		t.Errorf("this machine's /etc/hosts changed:\n%s", after)
	}
}

// TestSecretsMaskedInEveryForm guards that a client printing its key, as
// given or decoded, leaves neither in its log nor in its exit's tail.
func TestSecretsMaskedInEveryForm(t *testing.T) {
	const key = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Q=" // "secret-key-for-the-test"
	var log syncBuffer
	s, err := Supervise([]Spec{{Name: "dev", Command: `echo "key ` + key + `"; echo "raw secret-key-for-the-test"; exit 1`,
		Secrets: device.KeyForms(key)}}, &log, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	e := waitExit(t, s)
	for _, where := range []string{log.String(), e.String()} {
		if strings.Contains(where, key) || strings.Contains(where, "secret-key-for-the-test") {
			t.Errorf("a form of the key shows: %q", where)
		}
	}
	if !strings.Contains(log.String(), "raw "+Masked) || !strings.Contains(log.String(), "key "+Masked) {
		t.Errorf("log %q lacks the masked lines", log.String())
	}
}
