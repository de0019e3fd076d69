package mttr

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mttrlab/mttr/internal/device"
)

// obsKind is what a device observed.
type obsKind uint8

const (
	obsLost      obsKind = iota // connection lost
	obsAttempt                  // a (re)connection attempt started
	obsConnected                // CONNACK received
	obsPublished                // a message was handed to the client
	obsAcked                    // its PUBACK arrived
	obsFailed                   // its publish failed
)

// obs is one timestamped observation of a device.
type obs struct {
	kind obsKind
	at   time.Time
	seq  int64
}

// driver runs one device: it publishes on a timer, publishes at once after
// a reconnect, and logs what happens.
type driver struct {
	dev      *device.Device
	interval time.Duration
	notify   func()
	nudge    chan struct{}

	mu       sync.Mutex
	log      []obs
	lastAck  atomic.Int64 // Unix ns of the newest PUBACK
	lostAt   atomic.Int64 // Unix ns of the newest loss, 0 after a reconnect
	inflight atomic.Int64
	acked    atomic.Int64
}

func (d *driver) record(kind obsKind, at time.Time, seq int64) {
	d.mu.Lock()
	d.log = append(d.log, obs{kind, at, seq})
	d.mu.Unlock()
	d.notify()
}

// snapshot returns a copy of the log.
func (d *driver) snapshot() []obs {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

// forget drops observations older than t.
func (d *driver) forget(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := 0
	for i < len(d.log) && d.log[i].at.Before(t) {
		i++
	}
	d.log = slices.Delete(d.log, 0, i)
}

func (d *driver) run(ctx context.Context) {
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	d.publish(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.publish(ctx)
		case <-d.nudge:
			d.publish(ctx)
		case e := <-d.dev.Events():
			switch e.Kind {
			case device.Lost:
				d.lostAt.Store(e.At.UnixNano())
				d.record(obsLost, e.At, 0)
			case device.Connecting:
				d.record(obsAttempt, e.At, 0)
			case device.Connected:
				d.record(obsConnected, e.At, 0)
				if d.lostAt.Swap(0) != 0 {
					d.publish(ctx) // do not let the timer inflate recovery
				}
			}
		}
	}
}

func (d *driver) publish(ctx context.Context) {
	p := d.dev.Send()
	d.inflight.Add(1)
	d.record(obsPublished, p.SentAt, p.Seq)
	go func() {
		defer d.inflight.Add(-1)
		at, err := p.Wait(ctx)
		switch {
		case err == nil:
			d.lastAck.Store(at.UnixNano())
			d.acked.Add(1)
			d.record(obsAcked, at, p.Seq)
		case ctx.Err() == nil:
			d.record(obsFailed, time.Now(), p.Seq)
		}
	}()
}

// verifier is a subscriber that records every telemetry message the broker
// delivers, by device and sequence number.
type verifier struct {
	dev    *device.Device
	notify func()

	mu        sync.Mutex
	seen      map[string]map[int64]int // device -> seq -> deliveries
	distinct  atomic.Int64
	malformed atomic.Int64
}

func (v *verifier) deliver(_ string, payload []byte, _ time.Time) {
	var t device.Telemetry
	if err := json.Unmarshal(payload, &t); err != nil || t.DeviceID == "" {
		v.malformed.Add(1)
		return
	}
	v.mu.Lock()
	m := v.seen[t.DeviceID]
	if m == nil {
		m = make(map[int64]int)
		v.seen[t.DeviceID] = m
	}
	m[t.Seq]++
	if m[t.Seq] == 1 {
		v.distinct.Add(1)
	}
	v.mu.Unlock()
	v.notify()
}

// deliveries returns how often each of seqs was delivered for device.
func (v *verifier) deliveries(device string, seqs []int64) map[int64]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[int64]int, len(seqs))
	for _, s := range seqs {
		if n := v.seen[device][s]; n > 0 {
			out[s] = n
		}
	}
	return out
}

// Fleet is the devices under test and the verifier, connected.
type Fleet struct {
	drivers  []*driver
	verifier *verifier
	changed  chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// connectParallel bounds how many devices connect at once.
const connectParallel = 64

// Connect connects the verifier, subscribes it to every device's telemetry,
// then connects the devices and starts them publishing every interval. The
// verifier should reconnect faster than the devices (a short
// MaxReconnectInterval, see VerifierTimings), or it misses what they
// publish right after an outage.
func Connect(ctx context.Context, devices []device.Config, verifierCfg device.Config, interval time.Duration) (*Fleet, error) {
	f := &Fleet{changed: make(chan struct{}, 1)}
	notify := func() {
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
	vdev, err := device.New(verifierCfg)
	if err != nil {
		return nil, err
	}
	if err := vdev.Connect(ctx); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	f.verifier = &verifier{dev: vdev, notify: notify, seen: make(map[string]map[int64]int)}
	if err := vdev.Subscribe(ctx, "devices/+/messages/events/", 1, f.verifier.deliver); err != nil {
		vdev.Close()
		return nil, fmt.Errorf("verifier: %w", err)
	}

	devs := make([]*device.Device, len(devices))
	sem := make(chan struct{}, connectParallel)
	errs := make(chan error, len(devices))
	var wg sync.WaitGroup
	for i, cfg := range devices {
		d, err := device.New(cfg)
		if err != nil {
			errs <- err
			break
		}
		devs[i] = d
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := d.Connect(ctx); err != nil {
				errs <- fmt.Errorf("device %s: %w", d.ID(), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, d := range devs {
			if d != nil {
				d.Close()
			}
		}
		vdev.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	for _, d := range devs {
		dr := &driver{dev: d, interval: interval, notify: notify, nudge: make(chan struct{}, 1)}
		f.drivers = append(f.drivers, dr)
		f.wg.Go(func() { dr.run(runCtx) })
	}
	return f, nil
}

// Close stops publishing and disconnects every device and the verifier.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	var wg sync.WaitGroup
	for _, d := range f.drivers {
		wg.Go(d.dev.Close)
	}
	wg.Wait()
	f.verifier.dev.Close()
}

// nudge makes every device that did not lose its connection publish now.
func (f *Fleet) nudge() {
	for _, d := range f.drivers {
		if d.lostAt.Load() == 0 {
			select {
			case d.nudge <- struct{}{}:
			default:
			}
		}
	}
}

// recovered reports whether every device has had a PUBACK after t.
func (f *Fleet) recovered(t time.Time) bool {
	ns := t.UnixNano()
	for _, d := range f.drivers {
		if d.lastAck.Load() < ns {
			return false
		}
	}
	return true
}

// settled reports whether no message is in flight and the verifier has
// caught up: it has seen every acknowledged message except those it had
// already missed when the previous cycle ended (missed).
func (f *Fleet) settled(qos byte, missed int64) bool {
	if f.inflight() > 0 {
		return false
	}
	// A verifier that is away will not receive what was published meanwhile.
	return qos == 0 || f.unverified() <= missed || !f.verifier.dev.IsConnectionOpen()
}

func (f *Fleet) inflight() int64 {
	var n int64
	for _, d := range f.drivers {
		n += d.inflight.Load()
	}
	return n
}

// unverified is how many acknowledged messages the verifier has not seen.
func (f *Fleet) unverified() int64 {
	var acked int64
	for _, d := range f.drivers {
		acked += d.acked.Load()
	}
	return max(0, acked-f.verifier.distinct.Load())
}

// VerifierTimings returns the verifier's timings: the devices' keep-alive
// and timeouts, but a reconnect backoff capped at 100 ms so that it is back
// before the devices it watches.
func VerifierTimings(devices device.Timings) device.Timings {
	t := devices
	t.MaxReconnectInterval = 100 * time.Millisecond
	t.ConnectRetryInterval = 100 * time.Millisecond
	return t
}

// DeviceID is the id of the i-th device (from 0): base, base-2, base-3, ...
func DeviceID(base string, i int) string {
	if i == 0 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, i+1)
}
