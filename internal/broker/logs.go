package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// FollowLogs streams the standard output of container ref from since on,
// each line prefixed with the engine's RFC 3339 timestamp, into w, until
// the container stops (nil) or ctx ends.
func (e *Engine) FollowLogs(ctx context.Context, ref string, since time.Time, w io.Writer) error {
	opts := client.ContainerLogsOptions{ShowStdout: true, Follow: true, Timestamps: true}
	if !since.IsZero() {
		opts.Since = fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())
	}
	rc, err := stream(ctx, e, "container logs", func(ctx context.Context) (client.ContainerLogsResult, error) {
		return e.cli.ContainerLogs(ctx, ref, opts)
	})
	if err != nil {
		return fmt.Errorf("follow logs of %s: %w", ref, err)
	}
	defer rc.Close()
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()
	if _, err := stdcopy.StdCopy(w, io.Discard, rc); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("follow logs of %s: %w", ref, err)
	}
	return ctx.Err()
}

// WaitStarted waits for the engine's next start event of container name
// (or id) at or after since, and returns its time.
func (e *Engine) WaitStarted(ctx context.Context, name string, since time.Time) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := e.cli.Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: make(client.Filters).Add("type", "container").Add("container", name).Add("event", "start"),
	})
	for {
		select {
		case m := <-res.Messages:
			// The engine's name filter also matches names that merely begin
			// with it, such as the holder's <name>-netns.
			if m.Actor.Attributes["name"] == name || strings.HasPrefix(m.Actor.ID, name) {
				return time.Unix(0, m.TimeNano), nil
			}
		case err := <-res.Err:
			if err == nil {
				err = io.EOF
			}
			return time.Time{}, fmt.Errorf("wait for %s to start: %w", name, err)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// Clock is how the engine's clock relates to ours.
type Clock struct {
	Offset      time.Duration // engine time minus our time
	Uncertainty time.Duration // half the round trip of the measurement
	Local       bool          // the engine is on this machine (a Unix socket): same clock
}

// MeasureClock estimates the engine's clock offset from its system time,
// read between two readings of ours.
func (e *Engine) MeasureClock(ctx context.Context) (Clock, error) {
	t0 := time.Now()
	info, err := e.info(ctx)
	t1 := time.Now()
	if err != nil {
		return Clock{}, fmt.Errorf("engine clock: %w", err)
	}
	engine, err := time.Parse(time.RFC3339Nano, info.Info.SystemTime)
	if err != nil {
		return Clock{}, fmt.Errorf("engine clock %q: %w", info.Info.SystemTime, err)
	}
	mid := t0.Add(t1.Sub(t0) / 2)
	return Clock{
		Offset:      engine.Sub(mid),
		Uncertainty: t1.Sub(t0) / 2,
		Local:       strings.HasPrefix(e.host, "unix://") || strings.HasPrefix(e.host, "npipe://"),
	}, nil
}
