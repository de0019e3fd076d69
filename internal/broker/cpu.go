package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// CPU returns the CPU time (user + system) container ref has used since it
// last started, as its engine counts it (its cgroup), and when that start
// was: a counter that restarts with the container. It reads one sample,
// without the engine's one-second wait for a second.
func (e *Engine) CPU(ctx context.Context, ref string) (started time.Time, used time.Duration, err error) {
	c, err := e.inspect(ctx, ref)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("container cpu: %w", err)
	}
	res, err := e.cli.ContainerStats(ctx, ref, client.ContainerStatsOptions{})
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("container %s cpu: %w", ref, err)
	}
	defer res.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return time.Time{}, 0, fmt.Errorf("container %s cpu: %w", ref, err)
	}
	return c.StartedAt, time.Duration(st.CPUStats.CPUUsage.TotalUsage), nil
}
