package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/dockertest"
)

// dockerParallel is how many of this package's parallel tests run at
// once, unless -parallel says otherwise. A Docker test spends most of its
// time waiting out keep-running and keep-dead; what it uses of the CPU
// comes in bursts (a container's start or stop, a TLS handshake). A test
// whose bounds assume a core to spare is not parallel: it runs before the
// parallel ones, with none of them beside it.
const dockerParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(dockerParallel)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	code := m.Run()
	shared.remove()
	os.Exit(code)
}

// shared is the broker image (for localhost) that the Docker tests share,
// the directory of its certificate, and the name of the network faults'
// helper image: the broker image is built once, at first use, and both
// images are removed when the package's tests end (by the process that
// built them: a test in a process of its own inherits them). A test that
// changes the image or its certificate, or needs another host's, builds
// its own (newLab and build).
var shared sharedImages

type sharedImages struct {
	once      sync.Once
	image     string
	certDir   string
	netfilter string
	inherited bool
	err       error
}

// sharedEnv hands the shared images to a test in a process of its own:
// "<image> <cert dir> <netfilter image>".
const sharedEnv = "MTTR_LAB_TEST_SHARED"

// build builds the shared image, or takes the one the parent process
// handed over.
func (s *sharedImages) build(t testing.TB) error {
	s.once.Do(func() {
		if v := os.Getenv(sharedEnv); v != "" {
			if _, err := fmt.Sscan(v, &s.image, &s.certDir, &s.netfilter); err != nil {
				s.err = fmt.Errorf("%s=%q: %w", sharedEnv, v, err)
			}
			s.inherited = true
			return
		}
		s.certDir, s.err = os.MkdirTemp("", "mttr-lab-test-certs-")
		if s.err != nil {
			return
		}
		l, out := newLabTB(t, "localhost")
		l.Config.CertDir = s.certDir
		s.image = l.Config.Image
		s.netfilter = dockertest.Name("mttr-netfilter")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := l.Image(ctx); err != nil {
			s.err = fmt.Errorf("%w\n%s", err, out)
		}
	})
	return s.err
}

// remove removes the shared images and certificate, if this process made
// them.
func (s *sharedImages) remove() {
	if s.image == "" || s.inherited {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if eng, err := broker.Connect(ctx); err == nil {
		for _, tag := range []string{s.image, s.netfilter} {
			if err := eng.RemoveImage(ctx, tag); err != nil && !errors.Is(err, broker.ErrNotFound) {
				fmt.Fprintln(os.Stderr, "remove shared test image:", err)
			}
		}
		eng.Close()
	}
	os.RemoveAll(s.certDir)
}

// sharedLab returns a Lab like newLab's for localhost, on the shared
// image and certificate, with a container, port and database of its own;
// its container is removed when the test ends.
func sharedLab(t testing.TB) (*Lab, *strings.Builder) {
	t.Helper()
	dockertest.Engine(t)
	if err := shared.build(t); err != nil {
		t.Fatalf("shared broker image: %v", err)
	}
	l, out := newLabTB(t, "localhost")
	l.Config.Image, l.Config.CertDir = shared.image, shared.certDir
	l.Config.NetfilterImage = shared.netfilter
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		quiet := *l
		quiet.Out = io.Discard
		_ = quiet.Down(ctx)
	})
	return l, out
}

// ownProcessEnv names the test that a test binary runs for its parent
// (inOwnProcess).
const ownProcessEnv = "MTTR_LAB_TEST_OWN_PROCESS"

// inOwnProcess is for a test that changes what the whole process shares,
// its environment (t.Setenv: DOCKER_HOST, XDG_CACHE_HOME), and so could
// not run beside the others: it runs t in a test binary of its own, in
// parallel with the other tests, and reports false; in that process it
// reports true, and the test goes on there. One that uses Docker
// (docker) gets the shared images. To run it in this process instead, for
// a debugger or -count loops, set MTTR_LAB_TEST_OWN_PROCESS to its name.
func inOwnProcess(t *testing.T, docker bool) bool {
	t.Helper()
	if os.Getenv(ownProcessEnv) == t.Name() {
		return true
	}
	t.Parallel()
	env := append(os.Environ(), ownProcessEnv+"="+t.Name())
	if docker {
		dockertest.Engine(t)
		if err := shared.build(t); err != nil {
			t.Fatalf("shared broker image: %v", err)
		}
		env = append(env, fmt.Sprintf("%s=%s %s %s", sharedEnv, shared.image, shared.certDir, shared.netfilter))
	}
	// The same subtests as this run asked for.
	run := "^" + regexp.QuoteMeta(t.Name()) + "$"
	if _, sub, ok := strings.Cut(flag.Lookup("test.run").Value.String(), "/"); ok {
		run += "/" + sub
	}
	args := []string{"-test.run=" + run, "-test.count=1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a process of its own: %v\n%s", t.Name(), err, out)
	}
	if testing.Verbose() {
		t.Logf("%s in a process of its own:\n%s", t.Name(), out)
	}
	if skip := regexp.MustCompile(`(?m)^--- SKIP: ` + regexp.QuoteMeta(t.Name()) + ` .*\n\s+(.*)$`).FindSubmatch(out); skip != nil {
		t.Skip(string(skip[1]))
	}
	return false
}
