package broker

import (
	"context"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// The engine calls the package makes, each bounded by the engine's call
// timeout (see call) and named for its error.

func (e *Engine) containerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	return call(ctx, e, "container create", 0, func(ctx context.Context) (client.ContainerCreateResult, error) {
		return e.cli.ContainerCreate(ctx, opts)
	})
}

func (e *Engine) containerStart(ctx context.Context, id string) error {
	return do(ctx, e, "container start", 0, func(ctx context.Context) (client.ContainerStartResult, error) {
		return e.cli.ContainerStart(ctx, id, client.ContainerStartOptions{})
	})
}

// containerRemove removes container id; force kills it first if it runs.
func (e *Engine) containerRemove(ctx context.Context, id string, force bool) error {
	return do(ctx, e, "container remove", 0, func(ctx context.Context) (client.ContainerRemoveResult, error) {
		return e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: force})
	})
}

func (e *Engine) containerInspect(ctx context.Context, ref string) (client.ContainerInspectResult, error) {
	return call(ctx, e, "container inspect", 0, func(ctx context.Context) (client.ContainerInspectResult, error) {
		return e.cli.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	})
}

// containerStop stops container id: SIGTERM, SIGKILL after grace. The
// engine answers when it has stopped, so the call may take grace longer.
func (e *Engine) containerStop(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace / time.Second)
	return do(ctx, e, "container stop", grace, func(ctx context.Context) (client.ContainerStopResult, error) {
		return e.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
	})
}

func (e *Engine) containerKill(ctx context.Context, id, signal string) error {
	return do(ctx, e, "container kill", 0, func(ctx context.Context) (client.ContainerKillResult, error) {
		return e.cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: signal})
	})
}

// containerRestart is stop (with grace) and start in one call.
func (e *Engine) containerRestart(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace / time.Second)
	return do(ctx, e, "container restart", grace, func(ctx context.Context) (client.ContainerRestartResult, error) {
		return e.cli.ContainerRestart(ctx, id, client.ContainerRestartOptions{Timeout: &secs})
	})
}

// pauseAttempts bounds how often a pause the runtime could not carry out
// is asked again.
const pauseAttempts = 3

// containerPause freezes container id. runc's cgroup v1 freezer gives up
// ("unable to freeze") when the container's tasks do not all stop within
// its short loop, as on a loaded host, and thaws them again: the
// container runs on as before, and asking again freezes it.
func (e *Engine) containerPause(ctx context.Context, id string) error {
	var err error
	for range pauseAttempts {
		err = do(ctx, e, "container pause", 0, func(ctx context.Context) (client.ContainerPauseResult, error) {
			return e.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{})
		})
		if err == nil || !strings.Contains(err.Error(), "unable to freeze") || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (e *Engine) containerUnpause(ctx context.Context, id string) error {
	return do(ctx, e, "container unpause", 0, func(ctx context.Context) (client.ContainerUnpauseResult, error) {
		return e.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
	})
}

func (e *Engine) containerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	return call(ctx, e, "container list", 0, func(ctx context.Context) (client.ContainerListResult, error) {
		return e.cli.ContainerList(ctx, opts)
	})
}

func (e *Engine) networkConnect(ctx context.Context, network, container string) error {
	return do(ctx, e, "network connect", 0, func(ctx context.Context) (client.NetworkConnectResult, error) {
		return e.cli.NetworkConnect(ctx, network, client.NetworkConnectOptions{Container: container})
	})
}

func (e *Engine) networkDisconnect(ctx context.Context, network, container string) error {
	return do(ctx, e, "network disconnect", 0, func(ctx context.Context) (client.NetworkDisconnectResult, error) {
		return e.cli.NetworkDisconnect(ctx, network, client.NetworkDisconnectOptions{Container: container})
	})
}

// networkDisconnectForce takes container off network even when it is not
// running.
func (e *Engine) networkDisconnectForce(ctx context.Context, network, container string) error {
	return do(ctx, e, "network disconnect", 0, func(ctx context.Context) (client.NetworkDisconnectResult, error) {
		return e.cli.NetworkDisconnect(ctx, network, client.NetworkDisconnectOptions{Container: container, Force: true})
	})
}

func (e *Engine) networkCreate(ctx context.Context, name string, opts client.NetworkCreateOptions) (client.NetworkCreateResult, error) {
	return call(ctx, e, "network create", 0, func(ctx context.Context) (client.NetworkCreateResult, error) {
		return e.cli.NetworkCreate(ctx, name, opts)
	})
}

func (e *Engine) networkInspect(ctx context.Context, ref string) (client.NetworkInspectResult, error) {
	return call(ctx, e, "network inspect", 0, func(ctx context.Context) (client.NetworkInspectResult, error) {
		return e.cli.NetworkInspect(ctx, ref, client.NetworkInspectOptions{})
	})
}

func (e *Engine) networkRemove(ctx context.Context, ref string) error {
	return do(ctx, e, "network remove", 0, func(ctx context.Context) (client.NetworkRemoveResult, error) {
		return e.cli.NetworkRemove(ctx, ref, client.NetworkRemoveOptions{})
	})
}

func (e *Engine) imageInspect(ctx context.Context, ref string) (client.ImageInspectResult, error) {
	return call(ctx, e, "image inspect", 0, func(ctx context.Context) (client.ImageInspectResult, error) {
		return e.cli.ImageInspect(ctx, ref)
	})
}

func (e *Engine) imageRemove(ctx context.Context, ref string) error {
	return do(ctx, e, "image remove", 0, func(ctx context.Context) (client.ImageRemoveResult, error) {
		return e.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	})
}

func (e *Engine) info(ctx context.Context) (client.SystemInfoResult, error) {
	return call(ctx, e, "info", 0, func(ctx context.Context) (client.SystemInfoResult, error) {
		return e.cli.Info(ctx, client.InfoOptions{})
	})
}
