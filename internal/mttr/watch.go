package mttr

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/device"
)

// Watch follows external device clients from the broker's side: it is fed
// the broker's events (Observe) and the clients' exits (Exited), and builds
// the same timelines as for our own devices. What the broker cannot see, it
// leaves empty: reconnect attempts that never reached it, and messages a
// client never managed to send.
type Watch struct {
	ids      []string
	verifier *byTopic
	cmds     *Commands // nil until ConnectCommands
	failed   func() error
	changed  chan struct{}

	mu      sync.Mutex
	events  map[string][]brokerlog.Event
	lastPub map[string]time.Time
	exits   map[string][]string // notes for the cycle in progress
}

// NewWatch watches the clients with ids. failed reports a client that
// cannot go on (may be nil).
func NewWatch(ids []string, failed func() error) *Watch {
	w := &Watch{ids: slices.Clone(ids), failed: failed, changed: make(chan struct{}, 1),
		events: map[string][]brokerlog.Event{}, lastPub: map[string]time.Time{}, exits: map[string][]string{}}
	for _, id := range ids {
		w.events[id] = nil
	}
	return w
}

// IDs are the watched clients' ids.
func (w *Watch) IDs() []string { return slices.Clone(w.ids) }

// ConnectVerifier connects a verifier that counts what the broker delivers
// on each client's telemetry topic.
func (w *Watch) ConnectVerifier(ctx context.Context, cfg device.Config) error {
	v := newByTopic(w.notify)
	vdev, err := connectVerifier(ctx, cfg, v.deliver)
	if err != nil {
		return err
	}
	v.dev = vdev
	w.verifier = v
	return nil
}

// ConnectCommands connects the commands' sender (cfg, from Verifier) and
// starts sending each client a command every interval. A client counts as
// listening once the broker's log shows it subscribe to its commands.
func (w *Watch) ConnectCommands(ctx context.Context, cfg device.Config, interval time.Duration) error {
	ids := make([]device.Identity, len(w.ids))
	for i, id := range w.ids {
		ids[i] = device.Identity{DeviceID: id}
	}
	cmds, err := StartCommands(ctx, CommandsSpec{Sender: cfg, Devices: ids, Interval: interval, SeenFromBroker: true, Notify: w.notify})
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.cmds = cmds
	var seen []brokerlog.Event // what the broker saw of them so far
	for _, id := range w.ids {
		seen = append(seen, w.events[id]...)
	}
	w.mu.Unlock()
	for _, e := range seen {
		cmds.Observe(e)
	}
	return nil
}

// Close disconnects the verifier and the commands' sender.
func (w *Watch) Close() {
	if w.verifier != nil {
		w.verifier.close()
	}
	w.commands().Close()
}

func (w *Watch) commands() *Commands {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cmds
}

func (w *Watch) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Observe records one broker event of a watched client; others are ignored.
func (w *Watch) Observe(e brokerlog.Event) {
	w.mu.Lock()
	evs, ok := w.events[e.ClientID]
	if ok {
		w.events[e.ClientID] = append(evs, e)
		if e.Kind == brokerlog.Publish && e.At.After(w.lastPub[e.ClientID]) {
			w.lastPub[e.ClientID] = e.At
		}
	}
	cmds := w.cmds
	w.mu.Unlock()
	cmds.Observe(e) // commands may be taken on a connection of another id
	if ok {
		w.notify()
	}
}

// Exited records that a client's process exited; the note goes into the
// error of the cycle in progress.
func (w *Watch) Exited(id, note string) {
	w.mu.Lock()
	w.exits[id] = append(w.exits[id], note)
	w.mu.Unlock()
	w.notify()
}

// Changed is signalled after any observation.
func (w *Watch) Changed() <-chan struct{} { return w.changed }

// Quiet stops the commands to the clients (on) or starts them again (off).
// The clients themselves are not ours to silence.
func (w *Watch) Quiet(on bool) { w.commands().Quiet(on) }

// Nudge brings the verifier back; an external client publishes when it
// wants to.
func (w *Watch) Nudge() {
	if w.verifier != nil {
		w.verifier.reconnect()
	}
	w.commands().Nudge()
}

// Recovered reports whether the broker has received a PUBLISH from every
// client at or after t, and every client that listens has acknowledged a
// command since.
func (w *Watch) Recovered(t time.Time) bool {
	return w.Published(t) && w.commands().ReceivedSince(t)
}

// Published reports whether the broker has received a PUBLISH from every
// client at or after t.
func (w *Watch) Published(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.ids {
		if w.lastPub[id].Before(t) {
			return false
		}
	}
	return true
}

// Settled reports whether the verifier has received every message the
// broker received from the clients since since, and no command sent
// before cutoff is in flight. What is in flight inside a client is
// invisible.
func (w *Watch) Settled(since, cutoff time.Time, _ byte, _ int64) bool {
	if !w.commands().Settled(cutoff) {
		return false
	}
	if w.verifier == nil {
		return true
	}
	if !w.verifier.back() {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.ids {
		digests := published(w.events[id], since, time.Now().Add(time.Hour))
		if w.verifier.matched(id, digests) < len(digests) {
			return false
		}
	}
	return true
}

// published returns the digests of the PUBLISHes among evs received in
// [from, to).
func published(evs []brokerlog.Event, from, to time.Time) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == brokerlog.Publish && !e.At.Before(from) && e.At.Before(to) {
			out = append(out, e.Digest)
		}
	}
	return out
}

// Unverified is 0: nothing is counted against the verifier here.
func (w *Watch) Unverified() int64 { return 0 }

// Failed reports a client that exited twice.
func (w *Watch) Failed() error {
	if w.failed == nil {
		return nil
	}
	return w.failed()
}

// Forget drops events before t.
func (w *Watch) Forget(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, evs := range w.events {
		i := 0
		for i < len(evs) && evs[i].At.Before(t) {
			i++
		}
		w.events[id] = slices.Delete(evs, 0, i)
	}
	if w.verifier != nil {
		w.verifier.forgetBefore(t)
	}
	w.cmds.Forget(t)
}

// Rows builds cycle n's row for every client and clears the exit notes.
func (w *Watch) Rows(n int, m Marks, note string) []Cycle {
	w.mu.Lock()
	defer w.mu.Unlock()
	rows := make([]Cycle, 0, len(w.ids))
	for _, id := range w.ids {
		delivered := func(digests []string) int {
			if w.verifier == nil {
				return 0
			}
			return w.verifier.take(id, digests)
		}
		cmds := w.cmds.log(id)
		row := brokerTimeline(n, id, w.events[id], delivered, m, cmds)
		notes := w.exits[id]
		delete(w.exits, id)
		switch {
		case note != "":
			notes = append([]string{note}, notes...)
		case row.notRecovered(m) != "":
			notes = append([]string{row.notRecovered(m)}, notes...)
		}
		if cmds.unmatched > 0 {
			notes = append(notes, fmt.Sprintf("%d acknowledgements of commands that match none sent", cmds.unmatched))
		}
		row.Error = strings.Join(notes, "; ")
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b Cycle) int { return compareDevice(a.Device, b.Device) })
	return rows
}

// brokerTimeline builds one client's row for cycle n from the broker's
// events, with the definitions of timeline as the broker sees them ("from
// the heal on" is from when we began healing, Marks.healFrom: a frozen broker
// processes what waited for it before the call that thawed it returns):
//
//   - lost_at: the broker's first disconnect or keep-alive timeout of the
//     client at or after Inject (none when the broker died without saying).
//   - reconnected_at: its first CONNECT from the heal on.
//   - first_ack_at: its first PUBLISH from the heal on (and not before it
//     reconnected): the broker acknowledges what it receives.
//   - ready_at: our probe's CONNACK, or the client's reconnect or first
//     PUBLISH if earlier; or, when it reconnected right after the path let
//     go of a connection it held, that moment (Marks.readyFor; when the
//     client began that attempt is invisible from here, so with several
//     clients one that merely came in then is credited too).
//   - last_ack_before_at: its last PUBLISH before Inject.
//   - first_c2d_at: its acknowledgement of the first command it received
//     from the heal on (the broker logs each); the other downstream
//     fields as downstreamOf defines them, its subscriptions and sessions
//     from the broker's log too.
//
// published and acknowledged count the PUBLISHes the broker received in
// [Start, End) (QoS ≥ 1 ones are acknowledged); delivered counts those of
// them the verifier received, matched by payload digest, whenever they
// arrived. Reconnect attempts that failed, loss and duplicates are invisible
// from here and stay 0.
func brokerTimeline(n int, id string, evs []brokerlog.Event, delivered func(digests []string) int, m Marks, cmds c2dLog) Cycle {
	c := m.cycle(n, id)
	from := m.healFrom()
	var lost, reconnected, firstAck, lastBefore time.Time
	for _, e := range evs {
		switch e.Kind {
		case brokerlog.Disconnect, brokerlog.KeepaliveTimeout:
			if lost.IsZero() && !e.At.Before(m.Inject) {
				lost = e.At
			}
		case brokerlog.Connect:
			if reconnected.IsZero() && !from.IsZero() && !e.At.Before(from) {
				reconnected = e.At
			}
		case brokerlog.Publish:
			if e.At.Before(m.Inject) {
				lastBefore = e.At
			}
			if firstAck.IsZero() && !from.IsZero() && !e.At.Before(from) && !e.At.Before(reconnected) {
				firstAck = e.At
			}
			if !e.At.Before(m.Start) && e.At.Before(m.End) {
				c.Published++
				if e.QoS > 0 {
					c.Acknowledged++
				}
			}
		}
	}
	c.LostAt, c.ReconnectedAt, c.FirstAckAt, c.LastAckBeforeAt = ns(lost), ns(reconnected), ns(firstAck), ns(lastBefore)
	c.ReadyAt = ns(m.readyFor(earliest(reconnected, firstAck), reconnected, time.Time{}))
	c.FirstC2DAt = ns(firstCommand(cmds, from))
	downstreamOf(&c, cmds, m, reconnected)
	c.Delivered = delivered(published(evs, m.Start, m.End))
	return c
}
