package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/client"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/store"
)

// command is `mage mttr` started the way a shell starts a job: in a
// process group of its own, its output read line by line.
type command struct {
	cmd   *exec.Cmd
	out   *os.File // the read end of its stdout
	lines chan string
	errs  strings.Builder
	done  chan struct{}
}

// commandEnv is l's settings as the command's environment.
func commandEnv(l *Lab) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MTTR_") {
			env = append(env, kv)
		}
	}
	for k, v := range l.Config.Vars() {
		if k != "MTTR_CONNECTION_STRING" && k != "MTTR_CLIENT_CMD" && v != "" {
			env = append(env, k+"="+v)
		}
	}
	if l.Config.ClientCmd != "" {
		env = append(env, "MTTR_CLIENT_CMD="+l.Config.ClientCmd)
	}
	return env
}

func startCommand(t *testing.T, l *Lab, argv ...string) *command {
	t.Helper()
	c := &command{cmd: exec.Command(argv[0], argv[1:]...), lines: make(chan string, 100), done: make(chan struct{})}
	c.cmd.Dir = "../.."
	c.cmd.Env = commandEnv(l)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.Stderr = &c.errs
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stdout, c.out = w, r
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		r.Close()
	})
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	return c
}

// await returns once the command printed a line starting with prefix.
func (c *command) await(t *testing.T, prefix string) {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				<-c.done
				t.Fatalf("no line %q before the output ended; stderr:\n%s", prefix, c.errs.String())
			}
			if strings.HasPrefix(line, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("no line %q within 3 minutes", prefix)
		}
	}
}

// exit waits, at most the clean-up budget plus a margin, for the command
// to end, and returns its exit status.
func (c *command) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(cleanupTimeout + 10*time.Second):
		t.Fatalf("still running %s after the signal; stderr:\n%s", cleanupTimeout+10*time.Second, c.errs.String())
	}
	return 0
}

// targets returns the process running the targets: the command's own
// process, or its child when it is `go tool mage` (magerun's binary in
// mage's place).
func (c *command) targets(t *testing.T) int {
	t.Helper()
	pid := c.cmd.Process.Pid
	if filepath.Base(c.cmd.Path) != "go" {
		return pid
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(d.Name())
			return child
		}
	}
	t.Fatalf("go (pid %d) has no child", pid)
	return 0
}

// awaitGone waits (up to a minute) until process pid, not our child, has
// exited, through a pidfd, which becomes readable when it does.
func awaitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	} else if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(fd)
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 60_000); err != nil || n != 1 {
		t.Fatalf("process %d still running a minute later", pid)
	}
}

// checkInterrupted asserts what an interrupted run leaves behind: its run
// marked interrupted for reason, no container, and no process of it.
func checkInterrupted(t *testing.T, eng *broker.Engine, l *Lab, reason string) {
	t.Helper()
	db, err := store.OpenReadOnly(t.Context(), l.Config.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	runs, err := db.Runs(t.Context(), 1)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs: %v %+v", err, runs)
	}
	if r := runs[0]; r.Status != store.StatusInterrupted || !strings.Contains(r.Error, reason) {
		t.Errorf("run %d: status %s, error %q; want interrupted, %q", r.ID, r.Status, r.Error, reason)
	}
	for _, name := range []string{l.Config.Container, broker.HolderName(l.Config.Container)} {
		if _, err := eng.Find(t.Context(), name); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("container %s left behind (%v)", name, err)
		}
	}
	left, err := client.FindMarked("MTTR_CONTAINER")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range left {
		if m.Value == l.Config.Container {
			t.Errorf("process %d (%s) left behind", m.PID, m.Command)
		}
	}
}

// TestDockerStopRequests sends each kind of stop request to a running `go
// tool mage mttr`, the way users and CI systems send them, and checks that
// each ends the run as Ctrl-C does: exit status ≠ 0, the run interrupted,
// no container and no process left. Mage alone ignored SIGINT sent to go
// alone and died of SIGTERM and SIGHUP without a word to the targets, and
// go then exited 0; a closed output killed the targets on the spot.
func TestDockerStopRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mage")
	}
	eng := dockertest.Engine(t)
	base, _ := newLab(t, "localhost")
	build(t, base)
	compiled := filepath.Join(t.TempDir(), "mttr-lab")
	compile := exec.Command("go", "tool", "mage", "-compile", compiled)
	compile.Dir = "../.."
	if out, err := compile.CombinedOutput(); err != nil {
		t.Fatalf("mage -compile: %v\n%s", err, out)
	}

	gotool := []string{"go", "tool", "mage", "mttr"}
	signal := func(sig syscall.Signal, who func(*testing.T, *command) int) func(*testing.T, *command) {
		return func(t *testing.T, c *command) {
			if err := syscall.Kill(who(t, c), sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	top := func(_ *testing.T, c *command) int { return c.cmd.Process.Pid }
	group := func(_ *testing.T, c *command) int { return -c.cmd.Process.Pid }
	targets := func(t *testing.T, c *command) int { return c.targets(t) }
	for _, tt := range []struct {
		name   string
		argv   []string
		stop   func(*testing.T, *command)
		reason string
	}{
		{"SIGTERM to go", gotool, signal(syscall.SIGTERM, top), "SIGTERM"},
		{"SIGINT to go alone", gotool, signal(syscall.SIGINT, top), "interrupted"},
		{"SIGHUP to the process group", gotool, signal(syscall.SIGHUP, group), "SIGHUP"},
		{"SIGTERM to the targets", gotool, signal(syscall.SIGTERM, targets), "SIGTERM"},
		{"output closed", gotool, func(_ *testing.T, c *command) { c.out.Close() }, "its output was closed"},
		{"SIGTERM to a compiled binary", []string{compiled, "mttr"}, signal(syscall.SIGTERM, top), "SIGTERM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := stopRun(t, base)
			c := startCommand(t, l, tt.argv...)
			c.await(t, "cycle 1/")
			tt.stop(t, c)
			if code := c.exit(t); code == 0 {
				t.Errorf("exit status 0; stderr:\n%s", c.errs.String())
			}
			checkInterrupted(t, eng, l, tt.reason)
		})
	}

	// Killing go leaves the targets without a parent: they must notice,
	// clean up and end on their own.
	t.Run("SIGKILL to go", func(t *testing.T) {
		l := stopRun(t, base)
		c := startCommand(t, l, gotool...)
		c.await(t, "cycle 1/")
		pid := c.targets(t)
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		awaitGone(t, pid)
		checkInterrupted(t, eng, l, fmt.Sprintf("the process that started it (pid %d) exited", c.cmd.Process.Pid))
	})
}

// stopRun is a run that goes on long enough to be stopped in the middle.
func stopRun(t *testing.T, base *Lab) *Lab {
	l := shortRun(t, base, "stop")
	l.Config.RestartCount = 1000
	l.Config.KeepRunning = 300 * time.Millisecond
	l.Config.KeepDead = 200 * time.Millisecond
	l.Config.SendInterval = 100 * time.Millisecond
	return l
}

// TestDockerKilledRunClients kills a run with external clients with
// SIGKILL, which runs no clean-up: its clients (a python process under sh,
// as sh -c runs it) must die with it. Then a client that left its process
// group, marked as the killed run's, must be ended by the next run. They
// used to live on and reconnect to later runs' brokers with the same ids.
func TestDockerKilledRunClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mage")
	}
	eng := dockertest.Engine(t)
	clientCmd := pythonClient(t, "paho_client.py")
	base, _ := newLab(t, "localhost")
	build(t, base)
	l := stopRun(t, base)
	l.Config.Client, l.Config.ClientCmd, l.Config.Devices = "external", clientCmd, 2
	c := startCommand(t, l, "go", "tool", "mage", "mttr")
	c.await(t, "cycle 1/")
	pid := c.targets(t)
	owner := fmt.Sprintf("%s:%d", hostname(t), pid)
	clients := marked(t, owner)
	if len(clients) < 4 { // per device: sh, python and the lifeline's watcher
		t.Fatalf("clients of run process %d: %+v", pid, clients)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, pid)
	for _, m := range clients {
		awaitGone(t, m.PID)
	}
	if left := marked(t, owner); len(left) > 0 {
		t.Errorf("client processes outlived their run: %+v", left)
	}

	// A client of the killed run that had left its process group.
	orphan := exec.Command("/bin/sh", "-c", "exec sleep 300")
	orphan.Env = append(os.Environ(), "MTTR_LAB_OWNER="+owner, "MTTR_LAB_RUN=1")
	orphan.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = orphan.Process.Kill() })
	reaped := make(chan error, 1)
	go func() { reaped <- orphan.Wait() }()

	next := shortRun(t, base, "stop")
	next.Config.DB = l.Config.DB
	next.Config.Container, next.Config.Port, next.Config.BrokerAddr = l.Config.Container, l.Config.Port, l.Config.BrokerAddr
	next.Config.RestartCount = 1
	var out strings.Builder
	next.Out = &out
	runMttr(t, next)
	select {
	case <-reaped:
	case <-time.After(time.Minute):
		t.Fatal("the orphaned client survived the next run")
	}
	want := fmt.Sprintf("ended client process %d (group %d", orphan.Process.Pid, orphan.Process.Pid)
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "marked run 1 abandoned") {
		t.Errorf("next run's output lacks %q or the abandoned run:\n%s", want, out.String())
	}
	for _, name := range []string{l.Config.Container, broker.HolderName(l.Config.Container)} {
		if _, err := eng.Find(t.Context(), name); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("container %s left behind (%v)", name, err)
		}
	}
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// marked lists the processes whose MTTR_LAB_OWNER is owner.
func marked(t *testing.T, owner string) []client.Marked {
	t.Helper()
	all, err := client.FindMarked("MTTR_LAB_OWNER")
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Marked
	for _, m := range all {
		if m.Value == owner {
			out = append(out, m)
		}
	}
	return out
}
