// Package client supervises external device clients: one process per
// device, run through sh -c in a process group of its own, its output
// prefixed with its name and kept in a per-run log. A client that exits is
// restarted once; a second exit is a failure that names its exit status and
// its last lines. Stopping sends SIGTERM to the whole group, then SIGKILL
// after a grace period, so no grandchild outlives the run.
//
// Clients must not outlive the process that supervises them either, even
// when it is killed with SIGKILL and can do nothing: each group holds a
// watcher that reads a pipe only the supervising process can write, and
// kills its group when that pipe closes. A client that leaves its process
// group escapes that; Marked finds it by its environment, for the next run.
package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mttrlab/mttr/internal/host"
)

// Spec is one client process.
type Spec struct {
	Name    string   // device id; prefixes its log lines
	Command string   // run with sh -c
	Env     []string // added to the environment
	// Secrets are masked wherever the client's output goes (the log and the
	// last lines quoted in errors), should the client print them.
	Secrets []string
	// Hosts, when set, is a hosts file the client sees as /etc/hosts, in a
	// mount namespace of its own (util-linux's unshare; without root, in a
	// user namespace too): the run decides what names resolve to.
	Hosts string
}

// tailLines is how many of a client's last output lines are kept for
// error messages.
const tailLines = 20

// outputDelay is how long a client's output is still read after its shell
// exited.
const outputDelay = time.Second

// lifeline is a pipe whose write end only this process holds (it is not
// inherited: close-on-exec), so its read end reads end-of-file exactly when
// this process is gone.
type lifeline struct{ r, w *os.File }

func newLifeline() (*lifeline, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("client lifeline: %w", err)
	}
	return &lifeline{r, w}, nil
}

// cut closes both ends: every group still tied to it kills itself.
func (l *lifeline) cut() {
	l.w.Close()
	l.r.Close()
}

// guarded is the shell script each client runs under, with the client's
// command as $1 and the lifeline's read end as descriptor 3. A watcher in
// the background, in the client's process group, waits for end-of-file on
// it and then kills the whole group (it holds none of the client's output,
// so the client's end is seen when the client ends); the script closes its
// own copy and becomes sh -c "$1", under the same process id.
const guarded = `(read -r _ <&3; kill -KILL 0) </dev/null >/dev/null 2>&1 & exec 3<&-; exec /bin/sh -c "$1"`

// Process is one running client.
type Process struct {
	spec  Spec
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	tail  *tail
	pgid  int
	start time.Time
}

// start runs spec, writing its prefixed output to log, tied to line.
func start(spec Spec, log io.Writer, line *lifeline) (*Process, error) {
	cmd := exec.Command("/bin/sh", "-c", guarded, "mttr-client", spec.Command)
	if spec.Hosts != "" {
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			return nil, fmt.Errorf("client %s: its own /etc/hosts needs unshare (Debian: util-linux): %w", spec.Name, err)
		}
		args := []string{"--mount", "--propagation", "private"}
		if os.Geteuid() != 0 {
			args = append(args, "--map-root-user")
		}
		// The hosts file is $2: the client's shell gets only $1.
		args = append(args, "/bin/sh", "-c", `mount --bind "$2" /etc/hosts || exit 125; `+guarded, "mttr-client", spec.Command, spec.Hosts)
		cmd = exec.Command(unshare, args...)
	}
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.ExtraFiles = []*os.File{line.r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t := &tail{}
	out := &prefixed{name: spec.Name, w: log, tail: t, mask: masker(spec.Secrets)}
	cmd.Stdout, cmd.Stderr = out, out
	// A descendant that left the group can hold the output open for good:
	// once the shell has exited, its output is read this long at most.
	cmd.WaitDelay = outputDelay
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("client %s: start: %w", spec.Name, err)
	}
	p := &Process{spec: spec, cmd: cmd, done: make(chan struct{}), tail: t, pgid: cmd.Process.Pid, start: time.Now()}
	go func() {
		// While the shell is a zombie its group id cannot be reused: end
		// its watcher and any straggler in the group, then reap it.
		_, p.err = host.Reap(cmd, func() { _ = syscall.Kill(-p.pgid, syscall.SIGKILL) })
		out.flush()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id of the shell (and the id of its process group).
func (p *Process) Pid() int { return p.pgid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error once Done is closed (nil for exit status 0).
func (p *Process) Err() error { return p.err }

// Tail returns the last lines the process wrote.
func (p *Process) Tail() string { return p.tail.String() }

// Stop sends SIGTERM to the process group, and SIGKILL when it has not
// exited after grace or when ctx ends, whichever comes first. It returns
// once the process has exited; grandchildren in its group get the same
// signals.
func (p *Process) Stop(ctx context.Context, grace time.Duration) {
	select {
	case <-p.done: // its group was killed when it exited
		return
	default:
	}
	_ = syscall.Kill(-p.pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done: // its group was killed when it exited
		return
	case <-t.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	<-p.done
}

// Exit reports a client that exited on its own.
type Exit struct {
	Name      string
	At        time.Time
	Err       error  // nil for exit status 0
	Restarted bool   // it was started again; false means this was its second exit
	Tail      string // its last lines
}

func (e Exit) String() string {
	status := "exit status 0"
	if e.Err != nil {
		status = e.Err.Error()
	}
	return fmt.Sprintf("client %s exited (%s)", e.Name, status)
}

// Supervisor runs one process per spec and restarts each once.
type Supervisor struct {
	log   io.Writer
	grace time.Duration
	exits chan Exit
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	line *lifeline

	mu     sync.Mutex
	procs  map[string]*Process
	failed error
}

// Supervise starts every spec. Exits are reported on Exits (buffered; the
// supervisor never blocks on it). Stop ends them all.
func Supervise(specs []Spec, log io.Writer, grace time.Duration) (*Supervisor, error) {
	line, err := newLifeline()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Supervisor{log: &lockedWriter{w: log}, grace: grace, exits: make(chan Exit, 2*len(specs)+1), ctx: ctx, stop: cancel, line: line, procs: map[string]*Process{}}
	for _, spec := range specs {
		p, err := start(spec, s.log, s.line)
		if err != nil {
			s.Stop(context.Background())
			return nil, err
		}
		s.procs[spec.Name] = p
		s.wg.Go(func() { s.watch(spec, p) })
	}
	return s, nil
}

func (s *Supervisor) watch(spec Spec, p *Process) {
	for restarted := false; ; restarted = true {
		select {
		case <-s.ctx.Done():
			return
		case <-p.Done():
		}
		if s.ctx.Err() != nil {
			return
		}
		e := Exit{Name: spec.Name, At: time.Now(), Err: p.Err(), Tail: p.Tail(), Restarted: !restarted}
		if restarted {
			s.mu.Lock()
			if s.failed == nil {
				s.failed = fmt.Errorf("%w: %s again after its restart; last lines:\n%s", ErrFailed, e, strings.TrimRight(e.Tail, "\n"))
			}
			s.mu.Unlock()
			s.exits <- e
			return
		}
		next, err := start(spec, s.log, s.line)
		if err != nil {
			s.mu.Lock()
			s.failed = fmt.Errorf("%w: %s and could not be restarted: %w", ErrFailed, e, err)
			s.mu.Unlock()
			e.Restarted = false
			s.exits <- e
			return
		}
		s.mu.Lock()
		if s.ctx.Err() != nil { // Stop began while we restarted it
			s.mu.Unlock()
			next.Stop(context.Background(), s.grace)
			return
		}
		s.procs[spec.Name] = next
		s.mu.Unlock()
		s.exits <- e
		p = next
	}
}

// Exits reports clients that exited on their own.
func (s *Supervisor) Exits() <-chan Exit { return s.exits }

// Failed returns the error of a client that exited twice, or nil.
func (s *Supervisor) Failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Stop stops every client (SIGTERM, then SIGKILL after the grace period or
// when ctx ends) and waits for them.
func (s *Supervisor) Stop(ctx context.Context) {
	s.stop()
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop(ctx, s.grace) })
	}
	wg.Wait()
	s.wg.Wait()
	s.line.cut()
}

// prefixed writes each complete line as "<name> | <line>" and keeps the
// last lines.
type prefixed struct {
	name string
	w    io.Writer
	tail *tail
	mask *strings.Replacer
	mu   sync.Mutex
	buf  []byte
}

// Masked stands in for a secret in a client's output.
const Masked = "<redacted>"

func masker(secrets []string) *strings.Replacer {
	var pairs []string
	for _, s := range secrets {
		if s != "" {
			pairs = append(pairs, s, Masked)
		}
	}
	return strings.NewReplacer(pairs...)
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.emit(p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > 64<<10 { // a line without end: write what there is
		p.emit(p.buf)
		p.buf = p.buf[:0]
	}
	return len(b), nil
}

func (p *prefixed) emit(line []byte) {
	masked := p.mask.Replace(string(line))
	p.tail.add(masked)
	fmt.Fprintf(p.w, "%s | %s\n", p.name, masked)
}

func (p *prefixed) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.emit(p.buf)
		p.buf = nil
	}
}

type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return strings.Join(t.lines, "\n") + "\n"
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// ErrFailed is wrapped by errors of clients that exited twice.
var ErrFailed = errors.New("client failed")

// Groups are the process groups of the clients running now.
func (s *Supervisor) Groups() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p.pgid)
	}
	return out
}
