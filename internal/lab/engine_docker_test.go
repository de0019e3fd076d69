package lab

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/store"
)

// lineSignal is an output that closes seen once a line starting with
// prefix was written.
type lineSignal struct {
	prefix string
	seen   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	b      strings.Builder
}

func (w *lineSignal) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	for line := range strings.Lines(w.b.String()) {
		if strings.HasPrefix(line, w.prefix) {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return len(p), nil
}

func (w *lineSignal) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// behindProxy builds a broker image through the engine itself, then
// points DOCKER_HOST at a proxy of it for the rest of the test. eng reaches
// the engine directly.
func behindProxy(t *testing.T) (eng *broker.Engine, base *Lab, proxy *dockertest.EngineProxy) {
	eng = dockertest.Engine(t)
	base, _ = sharedLab(t)
	proxy = dockertest.NewEngineProxy(t)
	t.Setenv("DOCKER_HOST", proxy.Host)
	return eng, base, proxy
}

// containerCall matches an engine request on a container (by name or id)
// ending in action, e.g. "/stop".
func containerCall(action string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/containers/") && strings.HasSuffix(r.URL.Path, action)
	}
}

// TestDockerFrozenEngine freezes the engine (behind a proxy that acts out a
// SIGSTOPped dockerd) in the middle of a run, once while the broker is up
// and once while it is down, and checks that the run fails within a bound
// derived from MTTR_ENGINE_TIMEOUT, names the call the engine did not
// answer, sends no start once the engine stopped answering, and leaves
// nothing running once the engine has carried out what waited for it. It
// used to hang for as long as the engine stayed frozen. Like every test
// that points DOCKER_HOST elsewhere, it runs in a process of its own.
func TestDockerFrozenEngine(t *testing.T) {
	if !inOwnProcess(t, true) {
		return
	}
	eng, base, proxy := behindProxy(t)

	for _, tt := range []struct {
		name   string
		freeze func(*http.Request) bool // after which request (nil: at once)
		call   string                   // the call left unanswered
		extra  time.Duration            // it waits by design
	}{
		{"broker up", nil, "container stop", 5 * time.Second},
		{"broker down", containerCall("/stop"), "container start", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := stopRun(t, base)
			// Long enough for an engine that answers to start the run's
			// containers on a loaded machine; the bound below grows with it.
			l.Config.EngineTimeout = 10 * time.Second
			l.Config.KeepDead = 2 * time.Second
			out := &lineSignal{prefix: "cycle 1/", seen: make(chan struct{})}
			l.Out = out
			// From the freeze on, the run fails within: what is left of
			// the cycle before its next engine call (keep-running, the
			// verifier's settling, keep-dead), that call's bound, then
			// clean-up, with a margin of 5 s.
			bound := l.Config.KeepRunning + 2*time.Second + l.Config.KeepDead +
				l.Config.EngineTimeout + tt.extra + cleanupTimeout + 5*time.Second
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			type result struct {
				id  int64
				err error
				at  time.Time
			}
			done := make(chan result, 1)
			go func() {
				id, err := l.Mttr(ctx)
				done <- result{id, err, time.Now()}
			}()
			select {
			case <-out.seen:
			case r := <-done:
				t.Fatalf("run ended before its first cycle: %v\n%s", r.err, out.String())
			}
			proxy.FreezeAfter(tt.freeze)
			frozenFrom := len(proxy.Requests())
			var r result
			select {
			case r = <-done:
			case <-time.After(bound):
				t.Fatalf("the run did not end within %s of the freeze:\n%s", bound, out.String())
			}
			var na *broker.NoAnswerError
			if !errors.As(r.err, &na) || na.Call != tt.call || !strings.Contains(r.err.Error(), "the Docker engine did not answer "+tt.call+" within ") || !strings.Contains(r.err.Error(), "(DOCKER_HOST="+proxy.Host+")") {
				t.Fatalf("Mttr = %v, want no answer to %s", r.err, tt.call)
			}
			// Once the engine stopped answering, nothing is started: the
			// only start it may hold is the heal it did not answer.
			starts := 0
			for _, req := range proxy.Requests()[frozenFrom:] {
				if req.Held && strings.HasSuffix(req.Path, "/start") {
					starts++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.call == "container start"]; starts != want {
				t.Errorf("%d starts sent to the frozen engine, want %d: %v", starts, want, proxy.Requests()[frozenFrom:])
			}

			// What waited in the engine is carried out now: a start that
			// waited is undone by the removal that waited behind it.
			proxy.Thaw()
			for _, name := range []string{l.Config.Container, broker.HolderName(l.Config.Container)} {
				if c, err := eng.Find(t.Context(), name); !errors.Is(err, broker.ErrNotFound) {
					t.Errorf("container %s there after the engine thawed: %+v, %v", name, c, err)
				}
			}
			run, _ := readRun(t, l.Config.DB, r.id)
			if run.Status != store.StatusFailed || !strings.Contains(run.Error, "did not answer "+tt.call) {
				t.Errorf("run %+v", run)
			}
		})
	}
}

// TestDockerEngineGoneDuringHeal makes the engine go away at the heal of
// the first cycle: the run fails saying so, instead of quoting whatever
// the broken call last said (such as libnetwork's endpoint errors).
func TestDockerEngineGoneDuringHeal(t *testing.T) {
	if !inOwnProcess(t, true) {
		return
	}
	eng, base, proxy := behindProxy(t)
	l := shortRun(t, base, "stop")
	t.Cleanup(func() { _ = eng.Remove(context.Background(), l.Config.Container) })
	stopped, stop, start := false, containerCall("/stop"), containerCall("/start")
	proxy.GoAwayOn(func(r *http.Request) bool {
		stopped = stopped || stop(r)
		return stopped && start(r)
	})
	id, err := l.Mttr(t.Context())
	if !errors.Is(err, broker.ErrEngineGone) || !strings.Contains(err.Error(), "the Docker engine went away during heal (DOCKER_HOST="+proxy.Host+")") {
		t.Fatalf("Mttr = %v", err)
	}
	run, _ := readRun(t, l.Config.DB, id)
	if run.Status != store.StatusFailed || !strings.Contains(run.Error, "went away during heal") {
		t.Errorf("run %+v", run)
	}
}
