package dockertest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
)

// EngineProxy serves the Engine API on a Unix socket of its own by passing
// every request on to the real engine, and acts out two failures of that
// engine:
//
//   - FreezeAfter: it stops answering, as a SIGSTOPped dockerd does:
//     requests wait and streams stall. Thaw carries out every request that
//     waited, those whose caller gave up included, as a dockerd that is
//     sent SIGCONT reads what waited in its socket and carries it out.
//   - GoAwayOn: the matching request gets no answer and the engine is
//     gone: every connection is closed and new ones are refused.
//
// It records the requests it was sent.
type EngineProxy struct {
	Host string // the DOCKER_HOST value that reaches it

	rp     *httputil.ReverseProxy
	srv    *http.Server
	ln     net.Listener
	base   context.Context // of requests carried out after a freeze
	cancel context.CancelFunc

	mu       sync.Mutex
	thawed   chan struct{} // closed while not frozen
	freezeOn func(*http.Request) bool
	goAway   func(*http.Request) bool
	held     sync.WaitGroup // requests that waited, until the engine answered them
	reqs     []Request
	conns    map[net.Conn]struct{}
}

// Request is one request the proxy was sent.
type Request struct {
	Method, Path string // the path without the API version, e.g. /containers/x/start
	Held         bool   // it arrived while the engine was frozen
}

func (r Request) String() string { return r.Method + " " + r.Path }

// NewEngineProxy starts a proxy to the engine the environment names, which
// must be on a Unix socket (the test is skipped otherwise), and stops it
// when the test ends.
func NewEngineProxy(t testing.TB) *EngineProxy {
	t.Helper()
	host, sock, ok := engineSocket()
	if !ok {
		t.Skipf("the engine proxy needs an engine on a Unix socket, not %s", host)
	}
	dir, err := os.MkdirTemp("", "engine") // short: a socket path has at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &EngineProxy{Host: "unix://" + path, ln: ln, thawed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.thawed)
	p.base, p.cancel = context.WithCancel(context.Background())
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			answered(res.Request.Context())
			res.Body = &stallingBody{ReadCloser: res.Body, p: p}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			answered(r.Context())
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: p, ConnState: p.track}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(p.close)
	return p
}

type answeredKey struct{}

// answered marks a held request as answered by the engine.
func answered(ctx context.Context) {
	if done, ok := ctx.Value(answeredKey{}).(func()); ok {
		done()
	}
}

var apiVersion = regexp.MustCompile(`^/v[0-9.]+/`)

func (p *EngineProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	thawed := p.thawed
	held := !closed(thawed)
	goAway := p.goAway != nil && p.goAway(r)
	p.reqs = append(p.reqs, Request{Method: r.Method, Path: "/" + apiVersion.ReplaceAllString(r.URL.Path, ""), Held: held})
	if held {
		p.held.Add(1)
	}
	p.mu.Unlock()
	if goAway {
		p.goAwayNow()
		panic(http.ErrAbortHandler) // no answer
	}
	ctx := r.Context()
	if held {
		<-thawed
		// Carried out even when the caller gave up meanwhile.
		var once sync.Once
		ctx = context.WithValue(p.base, answeredKey{}, func() { once.Do(p.held.Done) })
	}
	p.rp.ServeHTTP(w, r.WithContext(ctx))
	if p.freezeOn != nil {
		p.mu.Lock()
		if p.freezeOn != nil && p.freezeOn(r) {
			p.freezeOn = nil
			p.thawed = make(chan struct{})
		}
		p.mu.Unlock()
	}
}

// FreezeAfter freezes the engine once a request that matches has been
// answered; a nil match freezes it now.
func (p *EngineProxy) FreezeAfter(match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if match == nil {
		p.thawed = make(chan struct{})
		return
	}
	p.freezeOn = match
}

// Frozen reports whether the engine is frozen now.
func (p *EngineProxy) Frozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !closed(p.thawed)
}

// Thaw lets the engine answer again, and returns once it has answered every
// request that waited.
func (p *EngineProxy) Thaw() {
	p.mu.Lock()
	if !closed(p.thawed) {
		close(p.thawed)
	}
	p.mu.Unlock()
	p.held.Wait()
}

// GoAwayOn makes the engine go away at the first request that matches.
func (p *EngineProxy) GoAwayOn(match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.goAway = match
}

// Requests returns the requests sent so far.
func (p *EngineProxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...)
}

func (p *EngineProxy) goAwayNow() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *EngineProxy) track(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

func (p *EngineProxy) close() {
	p.Thaw()
	p.cancel()
	p.srv.Close()
}

// stallingBody stalls a streamed response while the engine is frozen.
type stallingBody struct {
	io.ReadCloser
	p *EngineProxy
}

func (b *stallingBody) Read(buf []byte) (int, error) {
	b.p.mu.Lock()
	thawed := b.p.thawed
	b.p.mu.Unlock()
	<-thawed
	return b.ReadCloser.Read(buf)
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
