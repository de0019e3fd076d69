// Package mttr is the recovery experiment. It believes a recovery time is
// only worth having if every part of it is observed, not inferred: the fault
// takes effect, the device notices, the broker is back, the device
// reconnects and its first message is acknowledged. It repeats a fault
// cycle, builds a timeline per device and cycle from timestamped events,
// and hands each cycle to a sink as soon as it ends. It knows the broker
// only through the Fault interface, so its tests run against an in-process
// broker.
package mttr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Fault takes the broker away and brings it back.
type Fault interface {
	// Inject makes the broker unavailable and returns when that took effect.
	Inject(ctx context.Context) (time.Time, error)
	// Heal starts bringing it back and returns when that call returned.
	Heal(ctx context.Context) (time.Time, error)
	// Ready blocks until the broker answers an MQTT CONNECT with a CONNACK
	// and returns when that CONNACK arrived.
	Ready(ctx context.Context) (time.Time, error)
}

// Instant is implemented by faults whose Inject also heals (an engine
// restart); the experiment then does not wait KeepDead.
type Instant interface{ Instant() bool }

// Addressed is implemented by faults that bring the broker back at
// another address (readdress): Address is where it is since the last heal.
type Addressed interface{ Address() string }

// Plan is what one run does.
type Plan struct {
	Cycles      int
	KeepRunning time.Duration // broker up before each fault
	// KeepRunningJitter varies each cycle's up time at random, uniformly
	// in KeepRunning ± KeepRunningJitter, so that faults do not fall in
	// step with the clients' own timers (keep-alive, telemetry).
	KeepRunningJitter time.Duration
	KeepDead          time.Duration // broker down
	RecoveryTimeout   time.Duration // longest wait for every device to recover
	SettleTimeout     time.Duration // longest wait for in-flight messages at a cycle's end; 0 means 2s
	QoS               byte
}

// upTime is one cycle's time up before the fault.
func (p Plan) upTime() time.Duration {
	if p.KeepRunningJitter <= 0 {
		return p.KeepRunning
	}
	return p.KeepRunning - p.KeepRunningJitter + rand.N(2*p.KeepRunningJitter+1)
}

// Devices are what an experiment watches recover: our own paho devices
// (Fleet), or external clients seen from the broker's side (Watch).
type Devices interface {
	// Changed is signalled whenever a device observation arrives.
	Changed() <-chan struct{}
	// Nudge asks devices that kept their connection to publish now.
	Nudge()
	// Recovered reports whether every device has had a PUBACK after t.
	Recovered(t time.Time) bool
	// Settled reports whether nothing the devices sent since since is in
	// flight any more, nor any command sent before cutoff; missed is what
	// Unverified was when the previous cycle ended.
	Settled(since, cutoff time.Time, qos byte, missed int64) bool
	// Unverified counts acknowledged messages the verifier never saw.
	Unverified() int64
	// Rows builds cycle n's row for every device.
	Rows(n int, m Marks, note string) []Cycle
	// Forget drops observations before t.
	Forget(t time.Time)
	// Failed reports a device that cannot go on.
	Failed() error
}

// HeldPath watches connections toward the broker that the network path
// holds: sent, and not answered though the broker is there.
type HeldPath interface {
	// HeldAfter is the last moment a connection was seen held, among those
	// seen held at or after t; zero when there is none.
	HeldAfter(t time.Time) time.Time
	// Forget drops what was last seen before t.
	Forget(t time.Time)
	// Active starts or pauses the watching: the experiment watches from
	// the heal to the end of each cycle.
	Active(on bool)
}

// Sink receives each cycle's rows, one per device, as soon as it ends.
type Sink func(ctx context.Context, rows []Cycle) error

// Experiment is one run: what to do, to which broker, watching which
// devices, and where each cycle goes.
type Experiment struct {
	Plan    Plan
	Fault   Fault
	Devices Devices
	Sink    Sink
	// Broker is the broker's event log, for the moments it was back
	// (listening_at, resumed_at); nil leaves them empty.
	Broker *BrokerLog
	// Path, when it can be watched, tells when the network path last held
	// a connection toward the broker (held_until_at); nil when it cannot.
	Path HeldPath
	// Progress gets a line per cycle; nil prints nothing.
	Progress io.Writer
	// Bed measures the test bed's own cost in each cycle; nil measures
	// nothing.
	Bed BedMeter
}

// ErrInterrupted reports a run stopped by its context (Ctrl-C, SIGTERM).
var ErrInterrupted = errors.New("interrupted")

// Run repeats e.Plan.Cycles fault cycles and hands each one to e.Sink.
// When ctx ends it stops at once, leaving the broker as it is (down, if the
// fault was in effect), and returns the cycles completed so far with an
// error wrapping ErrInterrupted. A device that
// does not recover within RecoveryTimeout is recorded as not recovered and
// the run goes on.
func (e Experiment) Run(ctx context.Context) (Summary, error) {
	if e.Plan.SettleTimeout == 0 {
		e.Plan.SettleTimeout = 2 * time.Second
	}
	if e.Progress == nil {
		e.Progress = io.Discard
	}
	var sum Summary
	p := newProgress(e.Progress, e.Plan)
	var missed int64
	for n := 1; n <= e.Plan.Cycles; n++ {
		rows, err := e.cycle(ctx, n, missed)
		if len(rows) > 0 {
			if serr := e.Sink(context.WithoutCancel(ctx), rows); serr != nil {
				return sum, fmt.Errorf("cycle %d: %w", n, serr)
			}
			sum.add(rows)
			p.cycle(n, rows, sum)
		}
		if err != nil {
			if ctx.Err() != nil {
				return sum, fmt.Errorf("cycle %d: %w", n, ErrInterrupted)
			}
			return sum, fmt.Errorf("cycle %d: %w", n, err)
		}
		if err := e.Devices.Failed(); err != nil {
			return sum, fmt.Errorf("cycle %d: %w", n, err)
		}
		missed = e.Devices.Unverified()
	}
	return sum, nil
}

// longOutage is the keep-dead from which a cycle says when its fault took
// effect, so that a long wait shows progress.
const longOutage = 5 * time.Second

// cycle runs one cycle. It returns rows whenever the fault was injected,
// even when it fails or is interrupted after that.
func (e Experiment) cycle(ctx context.Context, n int, missed int64) ([]Cycle, error) {
	plan, fault, fleet := e.Plan, e.Fault, e.Devices
	m := Marks{Start: time.Now()}
	var bed BedCost
	var endBed func(context.Context) BedCost
	// finish ends the cycle: its end mark, and the bed's window.
	finish := func() {
		m.End = time.Now()
		if endBed != nil {
			bed = endBed(ctx)
		}
	}
	rows := func(note string) []Cycle {
		e.Broker.mark(&m)
		if back := m.cycle(n, "").BackAt(); e.Path != nil && back != 0 {
			m.HeldUntil = e.Path.HeldAfter(time.Unix(0, back))
		}
		out := fleet.Rows(n, m, note)
		addr := ""
		if a, ok := fault.(Addressed); ok && !m.HealedAt.IsZero() {
			addr = a.Address()
		}
		peak := e.Broker.acceptPeak(m.healFrom(), m.End)
		for i := range out {
			out[i].Interrupted = ctx.Err() != nil
			out[i].BrokerAddress = addr
			out[i].BrokerAcceptPeak = peak
			out[i].Bed = bed
		}
		return out
	}
	if err := pause(ctx, plan.upTime()); err != nil {
		return nil, err
	}
	// Before taking the broker away, let the verifier catch up (and come
	// back, if the broker dropped it): what it has not received by then
	// would go with a broker that keeps sessions only in memory.
	settle(ctx, fleet, plan, m.Start, missed)
	if e.Bed != nil {
		endBed = e.Bed.Begin(ctx)
	}
	m.Inject = time.Now()
	if e.Path != nil { // an engine restart heals inside Inject
		e.Path.Active(true)
	}
	at, err := fault.Inject(ctx)
	if err != nil {
		return nil, fmt.Errorf("inject: %w", err)
	}
	m.FaultAt = at
	if inst, ok := fault.(Instant); !ok || !inst.Instant() {
		if plan.KeepDead >= longOutage {
			fmt.Fprintf(e.Progress, "cycle %d/%d  fault in effect, heals in %s\n", n, plan.Cycles, time.Until(m.FaultAt.Add(plan.KeepDead)).Round(time.Second))
		}
		// Down for KeepDead from when the fault took effect.
		if err := pause(ctx, time.Until(m.FaultAt.Add(plan.KeepDead))); err != nil {
			// Interrupted while the broker is down: it stays down. Nothing
			// is started once the run has been told to stop; whoever
			// started the broker removes it as it is.
			finish()
			return rows("interrupted before healing"), err
		}
		m.Heal = time.Now()
	}
	if m.HealedAt, err = fault.Heal(ctx); err != nil {
		finish()
		return rows("heal: " + err.Error()), fmt.Errorf("heal: %w", err)
	}
	if m.Heal.IsZero() { // an engine restart healed inside Inject
		m.Heal = m.HealedAt
	}

	rctx, cancel := context.WithTimeout(ctx, plan.RecoveryTimeout)
	defer cancel()
	var readyErr error
	m.ProbeAt, readyErr = awaitRecovery(rctx, fault, fleet, m.Heal)
	finish()
	settle(ctx, fleet, plan, m.Start, missed)
	if readyErr == nil {
		e.Broker.awaitBack(ctx, m, plan.SettleTimeout)
		// The broker's log reaches us a little late. A probe of our own
		// after the cycle's end is a line the broker writes after all it
		// did in the cycle (a device's SUBSCRIBE): once it is read, so is
		// the rest.
		if e.Broker != nil {
			probed := time.Now()
			if _, err := fault.Ready(ctx); err == nil {
				e.Broker.awaitProbe(ctx, probed, plan.SettleTimeout)
			}
		}
	}
	note := ""
	switch {
	case ctx.Err() != nil:
		note = "interrupted before recovery"
	case readyErr != nil && rctx.Err() == nil:
		note = "broker not ready: " + readyErr.Error()
	}
	out := rows(note)
	fleet.Forget(m.Inject)
	e.Broker.forget(m.Inject)
	if e.Path != nil {
		e.Path.Forget(m.Inject)
		e.Path.Active(false)
	}
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	if readyErr != nil && rctx.Err() == nil {
		return out, fmt.Errorf("ready: %w", readyErr)
	}
	return out, nil
}

// awaitRecovery probes the broker until it is ready, then nudges devices
// that never lost their connection to publish, and waits until every device
// has a PUBACK from healed on, or ctx ends. It returns the probe's ready
// time.
func awaitRecovery(ctx context.Context, fault Fault, fleet Devices, healed time.Time) (time.Time, error) {
	type result struct {
		at  time.Time
		err error
	}
	ready := make(chan result, 1)
	go func() {
		at, err := fault.Ready(ctx)
		ready <- result{at, err}
	}()
	var probe *result
	for probe == nil || !fleet.Recovered(healed) {
		select {
		case r := <-ready:
			probe = &r
			if r.err != nil {
				return time.Time{}, r.err
			}
			fleet.Nudge()
		case <-fleet.Changed():
		case <-ctx.Done():
			if probe == nil {
				r := <-ready
				probe = &r
			}
			return probe.at, probe.err
		}
	}
	return probe.at, nil
}

// settle waits until no message is in flight and the verifier has caught
// up, or SettleTimeout passes.
func settle(ctx context.Context, fleet Devices, plan Plan, since time.Time, missed int64) {
	t := time.NewTimer(plan.SettleTimeout)
	defer t.Stop()
	cutoff := time.Now()
	for !fleet.Settled(since, cutoff, plan.QoS, missed) {
		select {
		case <-fleet.Changed():
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// compareDevice orders "d", "d-2", ..., "d-10" numerically.
func compareDevice(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pause waits d or until ctx ends. It waits on a configured duration, not
// on an event.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
