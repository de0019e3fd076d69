package mttr

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/device"
)

// fastStep is the first interval of the fast cadence after a heal; it
// doubles up to fastCap (or the command interval, if shorter). The cadence
// is only what remains when no event says a device can take a command:
// its reconnect, or its subscription, sends one at once.
const (
	fastStep = 20 * time.Millisecond
	fastCap  = 200 * time.Millisecond
)

// tickStep is how often the sender looks for commands that are due.
const tickStep = 10 * time.Millisecond

// Commands is the cloud side of the downstream. Its own connection sends
// every device a command (a cloud-to-device message with QoS 1 on its
// command topic, carrying a sequence number) every interval, and after
// each heal at a fast cadence until the device has received one again:
// at once when the broker's log shows the device connect or subscribe,
// and then after 20 ms, 40 ms, ... up to the interval, so that the
// cadence is not what is measured. It keeps what it sent and what was
// received, and what the broker saw of each device's subscriptions and
// sessions, for the cycle rows (c2dLog).
type Commands struct {
	dev      *device.Device
	interval time.Duration
	notify   func()
	verifier // the reconnect of its own connection after a restart

	mu   sync.Mutex
	devs map[string]*downstream
	ids  []string

	stop context.CancelFunc
	done chan struct{}
}

// downstream is what is known of one device's commands.
type downstream struct {
	topic   string // where its commands go
	listens bool   // it subscribed to a filter that matches topic
	seq     int64
	log     c2dLog
	// digests names each command sent by its payload, for receipts known
	// only from the broker's acknowledgement log.
	digests map[string]int64

	pending bool // a heal happened and nothing was received since
	step    time.Duration
	next    time.Time
}

// sentCmd is one command sent.
type sentCmd struct {
	seq int64
	at  time.Time
}

// receipt is one command received.
type receipt struct {
	seq int64
	at  time.Time
}

// sessionAt is a connack of the broker to a device.
type sessionAt struct {
	at      time.Time
	present bool
}

// c2dLog is what is known of one device's commands: what was sent, each
// receipt, and what the broker saw of its subscriptions and sessions.
type c2dLog struct {
	listens    bool
	sent       []sentCmd
	received   []receipt
	subscribes []time.Time // SUBSCRIBEs matching its command topic
	connacks   []sessionAt
}

// CloudID is the client id of the commands' sender for a device id base.
func CloudID(base string) string { return base + "-cloud" }

// StartCommands connects the sender (cfg, from Verifier, whose identity
// names the sender) and starts sending commands every interval to each of
// devices, by id. listening says the devices subscribe to their commands
// for sure (our own); otherwise a device counts as listening once the
// broker's log shows it subscribe to them (Observe). notify is signalled
// on every receipt.
func StartCommands(ctx context.Context, cfg device.Config, devices []device.Identity, interval time.Duration, listening bool, notify func()) (*Commands, error) {
	dev, err := device.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := dev.Connect(ctx); err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	c := &Commands{dev: dev, interval: interval, notify: notify, devs: map[string]*downstream{}, done: make(chan struct{})}
	c.verifier = newVerifier(c.resume)
	c.verifier.dev = dev
	now := time.Now()
	for _, id := range devices {
		c.ids = append(c.ids, id.DeviceID)
		c.devs[id.DeviceID] = &downstream{topic: id.CommandTopic(), listens: listening, digests: map[string]int64{}, next: now}
	}
	var runCtx context.Context
	runCtx, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	go c.run(runCtx)
	return c, nil
}

// Close stops sending and disconnects.
func (c *Commands) Close() {
	if c == nil {
		return
	}
	c.stop()
	<-c.done
	c.verifier.close()
}

func (c *Commands) run(ctx context.Context) {
	defer close(c.done)
	tick := time.NewTicker(tickStep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			c.mu.Lock()
			for _, id := range c.ids {
				if d := c.devs[id]; !now.Before(d.next) {
					c.sendLocked(id, d, now)
				}
			}
			c.mu.Unlock()
		}
	}
}

// sendLocked sends d its next command if the sender is connected, and
// schedules the one after; c.mu is held.
func (c *Commands) sendLocked(id string, d *downstream, now time.Time) {
	if d.pending {
		d.step = min(2*d.step, fastCap, c.interval)
	} else {
		d.step = c.interval
	}
	d.next = now.Add(d.step)
	seq := d.seq + 1
	payload, _ := json.Marshal(device.Telemetry{DeviceID: id, Seq: seq, SentAt: now.UnixNano()})
	if c.dev.PublishTo(d.topic, payload) == nil {
		c.reconnect() // the broker dropped the sender: nothing sent until it is back
		return
	}
	d.seq = seq
	d.log.sent = append(d.log.sent, sentCmd{seq, now})
	d.digests[brokerlog.Digest(payload)] = seq
}

// Nudge starts the fast cadence for every device, after a heal, once the
// broker answers again; it brings the sender back if the broker dropped it.
func (c *Commands) Nudge() {
	if c == nil {
		return
	}
	c.reconnect()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for _, d := range c.devs {
		if d.listens { // one that never subscribed is sent to at the usual cadence
			d.pending, d.step, d.next = true, fastStep/2, now
		}
	}
}

// resume sends at once to every device still waiting, when the sender is
// connected again.
func (c *Commands) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for _, id := range c.ids {
		if d := c.devs[id]; d.pending {
			d.step = fastStep / 2
			c.sendLocked(id, d, now)
		}
	}
}

// poke sends to device id at once if it is waiting for a command since the
// heal.
func (c *Commands) poke(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.devs[id]; d != nil && d.pending {
		d.step = fastStep / 2
		c.sendLocked(id, d, time.Now())
	}
}

// Received records a command our own device id received.
func (c *Commands) Received(id string, payload []byte, at time.Time) {
	var t device.Telemetry
	if json.Unmarshal(payload, &t) != nil || t.DeviceID != id {
		return
	}
	c.receipt(id, t.Seq, at)
}

func (c *Commands) receipt(id string, seq int64, at time.Time) {
	c.mu.Lock()
	d := c.devs[id]
	if d != nil {
		d.log.received = append(d.log.received, receipt{seq, at})
		if d.pending {
			d.pending = false
			d.next = at.Add(c.interval)
		}
	}
	c.mu.Unlock()
	if d != nil && c.notify != nil {
		c.notify()
	}
}

// Observe follows the broker's log. A device's connect, or a SUBSCRIBE to
// its command topic, sends it a command at once if it is waiting for one;
// its subscriptions and sessions are kept; an acknowledgement of a command
// is its receipt, for clients seen from the broker's side only.
// Subscriptions and acknowledgements count for the device whose command
// topic they are about, whichever client made them (a client may take its
// commands on a connection of its own); sessions are the device's own.
func (c *Commands) Observe(e brokerlog.Event) {
	if c == nil {
		return
	}
	var poke []string
	var got string
	var seq int64
	c.mu.Lock()
	switch e.Kind {
	case brokerlog.Connect:
		if c.devs[e.ClientID] != nil {
			poke = append(poke, e.ClientID)
		}
	case brokerlog.Connack:
		if d := c.devs[e.ClientID]; d != nil {
			d.log.connacks = append(d.log.connacks, sessionAt{e.At, e.SessionPresent})
		}
	case brokerlog.Subscribe:
		for _, id := range c.subscribers(e.Topics) {
			d := c.devs[id]
			d.listens = true
			d.log.subscribes = append(d.log.subscribes, e.At)
			poke = append(poke, id)
		}
	case brokerlog.Ack:
		if id, ok := deviceOfTopic(e.Topic); ok && c.devs[id] != nil && c.devs[id].topic == e.Topic {
			got, seq = id, c.devs[id].digests[e.Digest]
		}
	}
	c.mu.Unlock()
	for _, id := range poke {
		c.poke(id)
	}
	if seq != 0 {
		c.receipt(got, seq, e.At)
	}
}

// subscribers are the devices whose command topic one of filters matches;
// c.mu is held. A filter that names a device (no wildcard in its id) is
// looked up, not matched against every device.
func (c *Commands) subscribers(filters []string) []string {
	var out []string
	for _, f := range filters {
		if id, ok := deviceOfTopic(f); ok && !strings.ContainsAny(id, "+#") {
			if d := c.devs[id]; d != nil && topicMatch(f, d.topic) && !slices.Contains(out, id) {
				out = append(out, id)
			}
			continue
		}
		for _, id := range c.ids {
			if topicMatch(f, c.devs[id].topic) && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// Settled reports whether every command sent to a device since it last
// had a command again after a heal has been received: nothing it can
// receive is in flight.
func (c *Commands) Settled() bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devs {
		if d.pending || len(d.log.received) == 0 {
			continue
		}
		back := d.log.received[len(d.log.received)-1].at
		got := map[int64]bool{}
		for _, r := range d.log.received {
			got[r.seq] = true
		}
		for _, s := range d.log.sent {
			if s.at.After(back) && !got[s.seq] && time.Since(s.at) < c.interval {
				return false
			}
		}
	}
	return true
}

// ReceivedSince reports whether every device that listens has received a
// command at or after t.
func (c *Commands) ReceivedSince(t time.Time) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devs {
		if !d.listens {
			continue
		}
		if n := len(d.log.received); n == 0 || d.log.received[n-1].at.Before(t) {
			return false
		}
	}
	return true
}

// log returns a copy of device id's log; listens is as the run knows it
// now.
func (c *Commands) log(id string) c2dLog {
	if c == nil {
		return c2dLog{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.devs[id]
	if d == nil {
		return c2dLog{}
	}
	l := d.log
	l.listens = d.listens
	l.sent, l.received = slices.Clone(l.sent), slices.Clone(l.received)
	l.subscribes, l.connacks = slices.Clone(l.subscribes), slices.Clone(l.connacks)
	return l
}

// Forget drops what happened before t.
func (c *Commands) Forget(t time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devs {
		old := map[int64]bool{}
		for _, s := range d.log.sent {
			if s.at.Before(t) {
				old[s.seq] = true
			}
		}
		d.log.sent = slices.DeleteFunc(d.log.sent, func(s sentCmd) bool { return old[s.seq] })
		d.log.received = slices.DeleteFunc(d.log.received, func(r receipt) bool { return r.at.Before(t) || old[r.seq] })
		d.log.subscribes = slices.DeleteFunc(d.log.subscribes, func(at time.Time) bool { return at.Before(t) })
		d.log.connacks = slices.DeleteFunc(d.log.connacks, func(s sessionAt) bool { return s.at.Before(t) })
		for k, seq := range d.digests {
			if old[seq] {
				delete(d.digests, k)
			}
		}
	}
}

// topicMatch reports whether MQTT topic filter f (with + and #) matches
// topic.
func topicMatch(f, topic string) bool {
	fs, ts := strings.Split(f, "/"), strings.Split(topic, "/")
	for i, p := range fs {
		switch {
		case p == "#":
			return true
		case i >= len(ts):
			return false
		case p != "+" && p != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}

// downstreamOf fills c's downstream fields from what is known of the
// device's commands (cmds), with m's moments; reconnected is when the
// device reconnected (zero if it did not), ready when the broker was back
// for it. Definitions (README "Timeline"):
//
//   - resubscribed_at: the first SUBSCRIBE to its commands the broker saw
//     from the heal on (a client may take its commands on a connection of
//     its own, which can come back before the one it publishes on).
//   - session: the broker's first CONNACK to it from the heal on, if it
//     reconnected: SessionResumed when the broker had its session.
//   - first_c2d_at: the first command it received from the heal on (set
//     by firstCommand, before ready_at is known).
//   - c2d_sent: commands sent to it in [Start, End); c2d_received: those
//     of them received, once or more; c2d_duplicated: the extra copies;
//     c2d_lost: those of them sent while it demonstrably listened, and
//     never received: from the first command it received in the cycle
//     until we began injecting the fault, and from first_c2d_at on. What
//     was sent otherwise, while it had no subscription or the broker was
//     going away, the broker drops by design.
func downstreamOf(c *Cycle, cmds c2dLog, m Marks, reconnected time.Time) {
	c.Listens = cmds.listens
	from := m.healFrom()
	for _, at := range cmds.subscribes {
		if !from.IsZero() && !at.Before(from) {
			c.ResubscribedAt = ns(at)
			break
		}
	}
	if !reconnected.IsZero() {
		for _, s := range cmds.connacks {
			if !from.IsZero() && !s.at.Before(from) {
				c.Session = SessionNew
				if s.present {
					c.Session = SessionResumed
				}
				break
			}
		}
	}
	got := map[int64]int{}
	for _, r := range cmds.received {
		got[r.seq]++
	}
	// When it listened: from its first receipt in the cycle up to Inject,
	// and from first_c2d_at on.
	listenedFrom := firstCommand(cmds, m.Start)
	backAt := m.End
	if c.FirstC2DAt != 0 {
		backAt = time.Unix(0, c.FirstC2DAt)
	}
	listened := func(at time.Time) bool {
		return (!listenedFrom.IsZero() && !at.Before(listenedFrom) && at.Before(m.Inject)) || !at.Before(backAt)
	}
	for _, s := range cmds.sent {
		if s.at.Before(m.Start) || !s.at.Before(m.End) {
			continue
		}
		c.C2DSent++
		if k := got[s.seq]; k > 0 {
			c.C2DReceived++
			c.C2DDuplicated += k - 1
		} else if listened(s.at) {
			c.C2DLost++
		}
	}
}

// firstCommand is the first command received at or after from.
func firstCommand(cmds c2dLog, from time.Time) time.Time {
	var first time.Time
	if from.IsZero() {
		return first
	}
	for _, r := range cmds.received {
		if !r.at.Before(from) && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	return first
}
