package mttr

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
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

// obs is one timestamped observation of a device (40 bytes: the small
// fields last).
type obs struct {
	at      time.Time
	seq     int64
	kind    obsKind
	session bool // of obsConnected: the broker had the device's session
}

// logRoom is how many observations each device's log has room for from
// the start, in one allocation for the fleet: a connected device has
// observed its attempt, its CONNACK, its first message and that
// message's PUBACK. A log that outgrows it grows on its own.
const logRoom = 4

// driver is one device of the fleet. It logs what the device observes,
// from the device's own callbacks, and publishes when the fleet's clock,
// a reconnect or a nudge asks it to (ask); the fleet's publishers do the
// publishing. It has no goroutine of its own: a fleet of thousands would
// pay a stack and a timer for each.
type driver struct {
	dev   *device.Device
	fleet *Fleet

	mu       sync.Mutex
	log      []obs
	lastAck  atomic.Int64 // Unix ns of the newest PUBACK
	lostAt   atomic.Int64 // Unix ns of the newest loss, 0 after a reconnect
	inflight atomic.Int64
	acked    atomic.Int64
	quiet    atomic.Bool   // publish nothing on its own: the device is idle
	wants    atomic.Uint32 // publishes asked for and not yet taken (want*)
}

// What a driver can be asked to publish for; each is one message.
const (
	wantTick uint32 = 1 << iota // the fleet's clock: skipped while quiet
	wantNow                     // the first message, or a nudge
	wantBack                    // the device reconnected
)

func (d *driver) record(kind obsKind, at time.Time, seq int64) {
	d.recordObs(obs{kind: kind, at: at, seq: seq})
}

func (d *driver) recordObs(o obs) {
	d.mu.Lock()
	d.log = append(d.log, o)
	d.mu.Unlock()
	d.fleet.notify()
}

// snapshot returns a copy of the log.
func (d *driver) snapshot() []obs {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

// forget drops observations older than t and returns the sequence numbers
// of the messages whose publication it dropped.
func (d *driver) forget(t time.Time) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var seqs []int64
	i := 0
	for ; i < len(d.log) && d.log[i].at.Before(t); i++ {
		if d.log[i].kind == obsPublished {
			seqs = append(seqs, d.log[i].seq)
		}
	}
	d.log = slices.Delete(d.log, 0, i)
	return seqs
}

// observe handles one of the device's connection events, on paho's
// goroutine: it must not block.
func (d *driver) observe(e device.Event) {
	switch e.Kind {
	case device.Lost:
		d.lostAt.Store(e.At.UnixNano())
		d.record(obsLost, e.At, 0)
	case device.Connecting:
		d.record(obsAttempt, e.At, 0)
	case device.Connected:
		d.recordObs(obs{kind: obsConnected, at: e.At, session: e.SessionPresent})
		if d.lostAt.Swap(0) != 0 && !d.quiet.Load() {
			d.ask(wantBack) // do not let the clock inflate recovery
		}
		d.fleet.cmds.connected(d.dev.ID(), e.SessionPresent) // a session the broker kept is a subscription
	case device.Subscribed:
		d.fleet.cmds.poke(d.dev.ID()) // nor the commands' cadence the downstream
	}
}

// ask has a publisher publish for what (a want* bit). A driver waits in
// the fleet's queue at most once: whoever finds it wanting nothing puts it
// there, and the publisher that takes it takes all it wants. A second ask
// of the same kind before then is one message, as a ticker's tick that
// finds the last one unread is dropped.
func (d *driver) ask(what uint32) {
	if d.wants.Or(what) == 0 {
		d.fleet.work <- d // never blocks: it has room for every driver
	}
}

// take publishes what the driver was asked for.
func (d *driver) take(ctx context.Context) {
	w := d.wants.Swap(0)
	if w&wantTick != 0 && !d.quiet.Load() {
		d.publish(ctx)
	}
	if w&wantNow != 0 {
		d.publish(ctx)
	}
	if w&wantBack != 0 {
		d.publish(ctx)
	}
}

// publish sends the device's next message; nothing waits for its PUBACK
// (SendNotify): a goroutine a message in flight would cost a fleet whose
// broker is slow to answer a stack for each.
func (d *driver) publish(ctx context.Context) {
	d.inflight.Add(1)
	p := d.dev.SendNotify(ctx, func(seq int64, at time.Time, err error) {
		defer d.inflight.Add(-1)
		switch {
		case err == nil:
			d.lastAck.Store(at.UnixNano())
			d.acked.Add(1)
			d.record(obsAcked, at, seq)
		case ctx.Err() == nil:
			d.record(obsFailed, time.Now(), seq)
		}
	})
	d.record(obsPublished, p.SentAt, p.Seq)
}

// publishers is how many goroutines publish for a fleet's devices: more
// than one, so that a device whose publish waits for paho (a connection
// going away) holds no other back.
const publishers = 16

// publisher publishes for the drivers in the queue until ctx ends.
func (f *Fleet) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-f.work:
			d.take(ctx)
		}
	}
}

// clock asks every device for a message at once, then every interval: one
// clock for the fleet, so each device publishes every interval.
func (f *Fleet) clock(ctx context.Context, interval time.Duration) {
	for i := range f.drivers {
		f.drivers[i].ask(wantNow)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			for i := range f.drivers {
				f.drivers[i].ask(wantTick)
			}
		}
	}
}

// Fleet is the devices under test and the verifier, connected.
type Fleet struct {
	drivers  []driver // one allocation for the fleet
	work     chan *driver
	verifier *bySeq
	cmds     *Commands // nil without a Cloud
	changed  chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// notify signals Changed without blocking.
func (f *Fleet) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// connectParallel bounds how many devices connect at once.
const connectParallel = 64

// FleetSpec is a fleet to connect.
type FleetSpec struct {
	Devices  []device.Config
	Verifier device.Config // from Verifier
	Interval time.Duration // between a device's telemetry messages
	// Cloud, when its identity is set, sends the devices commands every
	// CommandInterval (Commands); the devices listen for them.
	Cloud           device.Config // from Verifier
	CommandInterval time.Duration
	// Progress gets a line every second while the devices connect, when
	// that takes longer; nil prints nothing.
	Progress io.Writer
}

// Connect connects the verifier, subscribes it to every device's telemetry,
// then connects the devices and starts them publishing every interval.
func Connect(ctx context.Context, spec FleetSpec) (*Fleet, error) {
	devices, verifierCfg, interval := spec.Devices, spec.Verifier, spec.Interval
	f := &Fleet{changed: make(chan struct{}, 1), drivers: make([]driver, len(devices)), work: make(chan *driver, len(devices))}
	logs := make([]obs, logRoom*len(devices))
	for i := range f.drivers {
		f.drivers[i].log = logs[i*logRoom : i*logRoom : (i+1)*logRoom]
	}
	v := newBySeq(f.notify)
	vdev, err := connectVerifier(ctx, verifierCfg, v.deliver)
	if err != nil {
		return nil, err
	}
	v.dev = vdev
	f.verifier = v
	if spec.Cloud.Identity.DeviceID != "" {
		ids := make([]device.Identity, len(devices))
		for i, d := range devices {
			ids[i] = d.Identity
		}
		if f.cmds, err = StartCommands(ctx, CommandsSpec{Sender: spec.Cloud, Devices: ids, Interval: spec.CommandInterval, Notify: f.notify}); err != nil {
			vdev.Close()
			return nil, err
		}
	}

	// Every device is made before any connects: what each keeps for good
	// then lies together, not among what the TLS handshakes leave behind,
	// where each object would hold a page of that garbage (1000 devices
	// made as they connected held 1.3 MB more).
	devs := make([]*device.Device, len(devices))
	for i, cfg := range devices {
		dr := &f.drivers[i]
		dr.fleet = f
		cfg.OnEvent = dr.observe
		d, err := device.New(cfg)
		if err != nil {
			f.cmds.Close()
			vdev.Close()
			return nil, err
		}
		dr.dev, devs[i] = d, d
	}
	sem := make(chan struct{}, connectParallel)
	errs := make(chan error, len(devices))
	var connected atomic.Int64
	stopProgress := connectProgress(spec.Progress, len(devices), &connected)
	var wg sync.WaitGroup
	for _, d := range devs {
		select { // a goroutine only for a device about to connect
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			errs <- fmt.Errorf("device %s: %w", d.ID(), context.Cause(ctx))
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := d.Connect(ctx); err != nil {
				errs <- fmt.Errorf("device %s: %w", d.ID(), err)
				return
			}
			if f.cmds != nil {
				id := d.ID()
				if err := d.Listen(ctx, func(_ string, payload []byte, at time.Time) { f.cmds.Received(id, payload, at) }); err != nil {
					errs <- fmt.Errorf("device %s: %w", id, err)
					return
				}
			}
			connected.Add(1)
		})
	}
	wg.Wait()
	stopProgress()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(devs)
		f.cmds.Close()
		vdev.Close()
		return nil, err
	}
	// The commands sent while the fleet connected, to devices that did
	// not listen yet, are no cycle's (a cycle counts from its start):
	// kept, they were a list of 15 a device after 10 000 connected.
	f.cmds.Forget(time.Now())
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	for range publishers {
		f.wg.Go(func() { f.publisher(runCtx) })
	}
	f.wg.Go(func() { f.clock(runCtx, interval) })
	return f, nil
}

// connectProgress prints, every second until stop is called, how many of
// total devices have connected.
func connectProgress(w io.Writer, total int, connected *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(w, "connecting devices: %d of %d after %s\n", connected.Load(), total, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// closeAll disconnects devs (nil entries aside) all at once: one by one,
// a large fleet would take longer than an interrupted run has.
func closeAll(devs []*device.Device) {
	var wg sync.WaitGroup
	for _, d := range devs {
		if d != nil {
			wg.Go(d.Close)
		}
	}
	wg.Wait()
}

// Close stops publishing and disconnects every device and the verifier.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	devs := make([]*device.Device, len(f.drivers))
	for i := range f.drivers {
		devs[i] = f.drivers[i].dev
	}
	closeAll(devs)
	f.cmds.Close()
	f.verifier.close()
}

// Observe hands the broker's events to the commands' sender.
func (f *Fleet) Observe(e brokerlog.Event) { f.cmds.Observe(e) }

// Changed is signalled after any observation.
func (f *Fleet) Changed() <-chan struct{} { return f.changed }

// Failed is always nil: our own devices do not die.
func (f *Fleet) Failed() error { return nil }

// Forget drops observations older than t.
func (f *Fleet) Forget(t time.Time) {
	for i := range f.drivers {
		d := &f.drivers[i]
		f.verifier.drop(d.dev.ID(), d.forget(t))
	}
	f.cmds.Forget(t)
}

// Rows builds cycle n's row for every device.
func (fleet *Fleet) Rows(n int, m Marks, note string) []Cycle {
	rows := make([]Cycle, 0, len(fleet.drivers))
	for i := range fleet.drivers {
		d := &fleet.drivers[i]
		id := d.dev.ID()
		row := timeline(n, id, d.snapshot(), func(seqs []int64) map[int64]int { return fleet.verifier.deliveries(id, seqs) }, m, fleet.cmds.log(id))
		var notes []string
		switch {
		case note != "":
			notes = append(notes, note)
		case row.notRecovered(m) != "":
			notes = append(notes, row.notRecovered(m))
		}
		row.Error = strings.Join(notes, "; ")
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b Cycle) int { return compareDevice(a.Device, b.Device) })
	return rows
}

// Quiet makes every device and the sender of commands fall silent (on)
// or speak again (off): then only the devices' keep-alive crosses their
// connections, as for a device that reports rarely.
func (f *Fleet) Quiet(on bool) {
	for i := range f.drivers {
		f.drivers[i].quiet.Store(on)
	}
	f.cmds.Quiet(on)
}

// Nudge makes every device that did not lose its connection publish now,
// and brings the verifier back.
func (f *Fleet) Nudge() {
	f.verifier.reconnect()
	f.cmds.Nudge()
	for i := range f.drivers {
		if d := &f.drivers[i]; d.lostAt.Load() == 0 {
			d.ask(wantNow)
		}
	}
}

// Recovered reports whether every device has had a PUBACK, and has
// received a command, at or after t.
func (f *Fleet) Recovered(t time.Time) bool {
	ns := t.UnixNano()
	for i := range f.drivers {
		if f.drivers[i].lastAck.Load() < ns {
			return false
		}
	}
	return f.cmds.ReceivedSince(t)
}

// Settled reports whether no message is in flight and the verifier has
// caught up: it has seen every acknowledged message except those it had
// already missed when the previous cycle ended (missed); and no command
// sent before cutoff is in flight. A verifier that is away is brought back
// (see verifier.back).
func (f *Fleet) Settled(_, cutoff time.Time, qos byte, missed int64) bool {
	if f.inflight() > 0 || !f.verifier.back() || !f.cmds.Settled(cutoff) {
		return false
	}
	return qos == 0 || f.Unverified() <= missed
}

func (f *Fleet) inflight() int64 {
	var n int64
	for i := range f.drivers {
		n += f.drivers[i].inflight.Load()
	}
	return n
}

// Unverified is how many acknowledged messages the verifier has not seen.
func (f *Fleet) Unverified() int64 {
	var acked int64
	for i := range f.drivers {
		acked += f.drivers[i].acked.Load()
	}
	return max(0, acked-f.verifier.distinct.Load())
}

// DeviceID is the id of the i-th device (from 0): base, base-2, base-3, ...
func DeviceID(base string, i int) string {
	if i == 0 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, i+1)
}
