package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/client"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/host"
	"github.com/mttrlab/mttr/internal/store"
)

// command is `mage mttr` started the way a shell starts a job: in a
// process group of its own, its output and error output read line by line.
type command struct {
	cmd             *exec.Cmd
	out, errOut     *os.File // the read ends of its stdout and stderr
	lines, errLines chan string
	mu              sync.Mutex
	errs            strings.Builder // all of stderr so far
	errRead         chan struct{}   // closed once stderr has been read to its end
	done            chan struct{}
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
	c := &command{cmd: exec.Command(argv[0], argv[1:]...), lines: make(chan string, 100), errLines: make(chan string, 100), errRead: make(chan struct{}), done: make(chan struct{})}
	c.cmd.Dir = "../.."
	c.cmd.Env = commandEnv(l)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var w [2]*os.File
	for i, r := range []**os.File{&c.out, &c.errOut} {
		var err error
		if *r, w[i], err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
	}
	c.cmd.Stdout, c.cmd.Stderr = w[0], w[1]
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w[0].Close()
	w[1].Close()
	t.Cleanup(func() {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		c.out.Close()
		c.errOut.Close()
	})
	go scanLines(c.out, c.lines, nil)
	go func() {
		defer close(c.errRead)
		scanLines(c.errOut, c.errLines, func(line string) {
			c.mu.Lock()
			c.errs.WriteString(line + "\n")
			c.mu.Unlock()
		})
	}()
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	return c
}

// scanLines sends r's lines to ch (dropping them when nobody reads), and
// to keep, until r ends.
func scanLines(r *os.File, ch chan string, keep func(string)) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if keep != nil {
			keep(sc.Text())
		}
		select {
		case ch <- sc.Text():
		default:
		}
	}
	close(ch)
}

// stderr is what the command wrote to its error output so far.
func (c *command) stderr() string {
	select {
	case <-c.done: // all it wrote, once read (or 5 s later: a child may hold it open)
		select {
		case <-c.errRead:
		case <-time.After(5 * time.Second):
		}
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs.String()
}

// await returns once the command printed a line starting with prefix.
func (c *command) await(t *testing.T, prefix string) { t.Helper(); c.awaitIn(t, c.lines, prefix) }

// awaitErr returns once the command wrote a line starting with prefix to
// its error output.
func (c *command) awaitErr(t *testing.T, prefix string) { t.Helper(); c.awaitIn(t, c.errLines, prefix) }

func (c *command) awaitIn(t *testing.T, lines chan string, prefix string) {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-c.done
				t.Fatalf("no line %q before the output ended (%s); stderr:\n%s", prefix, c.cmd.ProcessState, c.stderr())
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
		t.Fatalf("still running %s after the signal; stderr:\n%s", cleanupTimeout+10*time.Second, c.stderr())
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
	if kids := host.Children(pid); len(kids) == 1 {
		return kids[0]
	}
	t.Fatalf("go (pid %d) has no child", pid)
	return 0
}

// awaitGone waits (up to a minute) until process pid, not our child, has
// exited, through a pidfd, which becomes readable when it does.
func awaitGone(t *testing.T, pid int) {
	t.Helper()
	if gone, err := host.AwaitExit(pid, time.Minute); err != nil || !gone {
		t.Fatalf("process %d still running a minute later (%v)", pid, err)
	}
}

// checkInterrupted asserts what an interrupted run leaves behind: its run
// marked interrupted for reason (any, when empty), no container, and no
// process of it.
func checkInterrupted(t *testing.T, eng *broker.Engine, l *Lab, reason string) {
	t.Helper()
	runs, err := readStore(t, l.Config.DB).Runs(t.Context(), 1)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs: %v %+v", err, runs)
	}
	if r := runs[0]; r.Status != store.StatusInterrupted || !strings.Contains(r.Error, reason) {
		t.Errorf("run %d: status %s, error %q; want interrupted, with %q", r.ID, r.Status, r.Error, reason)
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
	t.Parallel()
	if testing.Short() {
		t.Skip("runs mage")
	}
	eng := dockertest.Engine(t)
	base, _ := sharedLab(t)
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
		// Mage's own handling of SIGINT may cancel first, without a reason.
		{"SIGINT to go alone", gotool, signal(syscall.SIGINT, top), ""},
		{"SIGHUP to the process group", gotool, signal(syscall.SIGHUP, group), "SIGHUP"},
		{"SIGTERM to the targets", gotool, signal(syscall.SIGTERM, targets), "SIGTERM"},
		{"output closed", gotool, func(_ *testing.T, c *command) { c.out.Close() }, "its output was closed"},
		// Mage writes to the error output when SIGINT arrives: that write
		// must not kill the targets (go tool mage mttr 2>&1 | tee, Ctrl-C).
		{"output and error output closed, then SIGINT", gotool, func(t *testing.T, c *command) {
			c.out.Close()
			c.errOut.Close()
			signal(syscall.SIGINT, top)(t, c)
		}, ""},
		{"SIGTERM to a compiled binary", []string{compiled, "mttr"}, signal(syscall.SIGTERM, top), "SIGTERM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := stopRun(t, base)
			c := startCommand(t, l, tt.argv...)
			c.await(t, "cycle 1/")
			tt.stop(t, c)
			if code := c.exit(t); code == 0 {
				t.Errorf("exit status 0; stderr:\n%s", c.stderr())
			}
			checkInterrupted(t, eng, l, tt.reason)
		})
	}

	// Killing go leaves the targets without a parent: they must notice,
	// clean up and end on their own.
	t.Run("SIGKILL to go", func(t *testing.T) {
		t.Parallel()
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
// SIGKILL, which runs no clean-up. Each client (a python process under sh,
// as sh -c runs it) first starts a child that leaves its process group
// (setsid) and keeps its output. The clients must die with the run; the
// children that escaped must be ended by the next run. Clients used to live
// on and reconnect to later runs' brokers with the same ids. It is not
// parallel: a run that starts beside it would remove what the dead run left
// before the next run is there to.
func TestDockerKilledRunClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mage")
	}
	eng := dockertest.Engine(t)
	clientCmd := pythonClient(t, "paho_client.py")
	base, _ := sharedLab(t)
	l := stopRun(t, base)
	l.Config.Client, l.Config.Devices = "external", 2
	l.Config.ClientCmd = `setsid sh -c 'echo "escaped $$"; exec sleep 300' & exec ` + clientCmd
	c := startCommand(t, l, "go", "tool", "mage", "mttr")
	c.await(t, "cycle 1/")
	pid := c.targets(t)
	owner := fmt.Sprintf("%s:%d", hostname(t), pid)
	var clients, escaped []client.Marked
	for _, m := range marked(t, owner) {
		if m.Command == "sleep 300" {
			escaped = append(escaped, m)
		} else {
			clients = append(clients, m)
		}
	}
	if len(clients) < 4 || len(escaped) != 2 { // per device: sh, python and the lifeline's watcher; and the escaped child
		t.Fatalf("clients of run process %d: %+v; escaped: %+v", pid, clients, escaped)
	}
	for _, m := range escaped {
		t.Cleanup(func() { _ = syscall.Kill(m.PID, syscall.SIGKILL) })
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, pid)
	for _, m := range clients {
		awaitGone(t, m.PID)
	}
	if left := marked(t, owner); len(left) != len(escaped) {
		t.Errorf("client processes outlived their run: %+v", left)
	}

	next := shortRun(t, base, "stop")
	next.Config.DB = l.Config.DB
	next.Config.Container, next.Config.Port, next.Config.BrokerAddr = l.Config.Container, l.Config.Port, l.Config.BrokerAddr
	next.Config.RestartCount = 1
	var out strings.Builder
	next.Out = &out
	runMttr(t, next)
	for _, m := range escaped {
		awaitGone(t, m.PID)
		if want := fmt.Sprintf("ended client process %d (group %d", m.PID, m.PGID); !strings.Contains(out.String(), want) {
			t.Errorf("next run's output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), "marked run 1 abandoned") {
		t.Errorf("next run's output lacks the abandoned run:\n%s", out.String())
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

// TestDockerKilledWhileWaiting kills go while `go tool mage mttr` waits
// for another mage call in the checkout to compile: nothing must run once
// that one is done. The targets used to start regardless, with no parent,
// and nothing would ever stop them. It is not parallel: it holds the
// checkout's lock, which other tests' mage calls would wait for.
func TestDockerKilledWhileWaiting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mage")
	}
	dockertest.Engine(t)
	base, _ := sharedLab(t)
	l := stopRun(t, base)
	// A mage cache of its own: the call has a binary to compile, so it
	// waits for the lock (a current binary runs without it).
	t.Setenv("MAGEFILE_CACHE", t.TempDir())
	// The lock another mage call would hold on the checkout.
	checkout, err := os.Open("../..")
	if err != nil {
		t.Fatal(err)
	}
	defer checkout.Close()
	if err := syscall.Flock(int(checkout.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	c := startCommand(t, l, "go", "tool", "mage", "mttr")
	c.awaitErr(t, "mage: waiting for another mage call")
	waiting := c.targets(t)
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, waiting)
	if err := syscall.Flock(int(checkout.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Config.DB); !os.IsNotExist(err) {
		t.Errorf("a run was recorded after its command was killed: %v", err)
	}
}
