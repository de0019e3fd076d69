package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moby/moby/client"
)

// DefaultCallTimeout is how long an engine call may take before the engine
// counts as not answering, unless ConnectWithin says otherwise. Engine
// calls take milliseconds; a frozen or overloaded engine would otherwise
// hold a run, and its Ctrl-C, forever.
const DefaultCallTimeout = 10 * time.Second

// NoAnswerError reports an engine that did not answer a call in time.
type NoAnswerError struct {
	Call  string        // e.g. "container start"
	After time.Duration // how long it was given
	Host  string        // the engine's address, as DOCKER_HOST names it
}

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("the Docker engine did not answer %s within %s (DOCKER_HOST=%s)", e.Call, e.After, e.Host)
}

// call runs one engine call named name, bounded by the engine's call
// timeout plus extra (for calls that wait by design, such as a stop's
// grace period). A call that runs out of time, its own or ctx's deadline,
// returns a *NoAnswerError; one cancelled with ctx returns ctx's error.
func call[T any](ctx context.Context, e *Engine, name string, extra time.Duration, fn func(context.Context) (T, error)) (T, error) {
	limit := e.timeout + extra
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	v, err := fn(cctx)
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		after := limit
		if d, ok := ctx.Deadline(); ok && d.Before(start.Add(limit)) {
			after = time.Since(start).Round(time.Millisecond) // ctx's deadline came first
		}
		return v, &NoAnswerError{Call: name, After: after, Host: e.host}
	}
	return v, err
}

// do is call for calls that return nothing worth keeping.
func do[T any](ctx context.Context, e *Engine, name string, extra time.Duration, fn func(context.Context) (T, error)) error {
	_, err := call(ctx, e, name, extra, fn)
	return err
}

// answering returns a context for a call that may rightly run long (an
// image build): it is cancelled, with a *NoAnswerError as its cause, once
// the engine stops answering pings meanwhile. release ends the watch.
func (e *Engine) answering(ctx context.Context, name string) (wctx context.Context, release func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		tick := time.NewTicker(e.timeout)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			err := do(wctx, e, "ping", 0, func(ctx context.Context) (client.PingResult, error) {
				return e.cli.Ping(ctx, client.PingOptions{})
			})
			var na *NoAnswerError
			if errors.As(err, &na) {
				cancel(&NoAnswerError{Call: name, After: na.After, Host: e.host})
				return
			}
		}
	}()
	return wctx, func() { cancel(nil) }
}

// noAnswer returns the *NoAnswerError that ended ctx (from answering), or
// err.
func noAnswer(ctx context.Context, err error) error {
	var na *NoAnswerError
	if errors.As(context.Cause(ctx), &na) {
		return na
	}
	return err
}

// stream opens a streaming call (its response body is read afterwards):
// only the engine's answer, the response's start, is bounded. The stream
// lives until ctx ends or the caller closes it.
func stream[T any](ctx context.Context, e *Engine, name string, fn func(context.Context) (T, error)) (T, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	na := &NoAnswerError{Call: name, After: e.timeout, Host: e.host}
	t := time.AfterFunc(e.timeout, func() { cancel(na) })
	v, err := fn(sctx)
	if !t.Stop() && err != nil {
		return v, na
	}
	return v, err
}

// ErrEngineGone wraps errors of calls that failed because the engine went
// away while they ran.
var ErrEngineGone = errors.New("the Docker engine went away")

// gone tells an engine that went away during step from one that refused
// it: when err is a call's failure and the engine no longer answers a
// ping, it says so, keeping err for the details.
func (e *Engine) gone(ctx context.Context, step string, err error) error {
	var na *NoAnswerError
	if err == nil || ctx.Err() != nil || errors.As(err, &na) {
		return err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(e.timeout, 2*time.Second))
	defer cancel()
	if _, perr := e.cli.Ping(pctx, client.PingOptions{}); perr == nil {
		return err
	}
	return fmt.Errorf("%w during %s (DOCKER_HOST=%s): %w", ErrEngineGone, step, e.host, err)
}
