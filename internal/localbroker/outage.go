package localbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// Fault modes a local broker supports, as MTTR_FAULT names them.
const (
	FaultStop  = "stop"  // SIGTERM (the broker closes its connections and exits), then a new process
	FaultKill  = "kill"  // SIGKILL, then a new process
	FaultPause = "pause" // SIGSTOP, then SIGCONT: TCP stays open, the broker stops answering
)

// dockerFaults are the modes that only the container mode has.
var dockerFaults = map[string]bool{"restart": true, "recreate": true, "disconnect": true}

// Outage takes the broker away in one way and brings it back, as often as
// asked. It implements mttr.Fault.
type Outage struct {
	b    *Broker
	mode string
	tls  *tls.Config
}

// Outage returns faults of mode (stop, kill or pause) against b, probing
// readiness with tlsConf.
func (b *Broker) Outage(mode string, tlsConf *tls.Config) (*Outage, error) {
	switch {
	case mode == FaultStop, mode == FaultKill, mode == FaultPause:
		return &Outage{b: b, mode: mode, tls: tlsConf}, nil
	case dockerFaults[mode]:
		return nil, fmt.Errorf("fault %q needs Docker: MTTR_BROKER=process supports stop, kill and pause", mode)
	default:
		return nil, fmt.Errorf("fault %q: unknown", mode)
	}
}

// Instant reports false: no local fault heals itself.
func (o *Outage) Instant() bool { return false }

// Inject takes the broker away. For stop and kill it returns once the
// process has exited, with the moment the signal was sent (as the
// container mode reports the engine's kill event); for pause, once the
// process is stopped, with the moment SIGSTOP was sent.
func (o *Outage) Inject(ctx context.Context) (time.Time, error) {
	p := o.b.current()
	if p == nil {
		return time.Time{}, fmt.Errorf("%s: no broker process is running", o.mode)
	}
	sig := map[string]syscall.Signal{FaultStop: syscall.SIGTERM, FaultKill: syscall.SIGKILL, FaultPause: syscall.SIGSTOP}[o.mode]
	at := time.Now()
	if err := p.signal(sig); err != nil {
		if errors.Is(err, errExited) {
			err = p.alive()
		}
		return time.Time{}, fmt.Errorf("%s: %w", o.mode, err)
	}
	if o.mode == FaultPause {
		if err := awaitStopped(ctx, p.pid); err != nil {
			return time.Time{}, fmt.Errorf("%s: %w", o.mode, err)
		}
		return at, nil
	}
	var escalate <-chan time.Time
	if o.mode == FaultStop {
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		escalate = t.C
	}
	for {
		select {
		case <-p.done:
			o.b.forget(p)
			return at, nil
		case <-escalate:
			_ = p.signal(syscall.SIGKILL)
			escalate = nil
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: waiting for the broker to exit: %w", o.mode, context.Cause(ctx))
		}
	}
}

// Heal brings the broker back and returns when the call that did so
// returned: a new process started on the same address (stop, kill), or
// SIGCONT sent (pause). After stop or kill it does nothing if a broker
// process still runs, like starting a running container.
func (o *Outage) Heal(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("heal %s: %w", o.mode, err)
	}
	if o.mode == FaultPause {
		p := o.b.current()
		if p == nil {
			return time.Time{}, fmt.Errorf("heal %s: no broker process is running", o.mode)
		}
		if err := p.signal(syscall.SIGCONT); err != nil {
			if errors.Is(err, errExited) {
				err = p.alive()
			}
			return time.Time{}, fmt.Errorf("heal %s: %w", o.mode, err)
		}
		return time.Now(), nil
	}
	before := o.b.current()
	p, err := o.b.restart()
	if err != nil {
		return time.Time{}, fmt.Errorf("heal %s: %w", o.mode, err)
	}
	if p == before { // it was running
		return time.Now(), nil
	}
	return p.started, nil
}

// Ready waits until the broker answers an MQTT CONNECT over verified TLS,
// probing every mqttprobe.ProbeInterval, and fails at once if the process
// exited.
func (o *Outage) Ready(ctx context.Context) (time.Time, error) {
	return o.b.WaitReady(ctx, o.tls, mqttprobe.ProbeInterval)
}
