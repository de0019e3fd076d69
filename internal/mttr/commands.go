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

// The fast cadence after a heal starts at fastStep and doubles up to
// fastCap (or the command interval, if shorter). It is only what remains
// when no event says a device can take a command: its reconnect, or its
// subscription, sends one at once.
const (
	fastStep = 20 * time.Millisecond
	fastCap  = 200 * time.Millisecond
)

// tickStep is how often the sender looks for commands that are due.
const tickStep = 10 * time.Millisecond

// acceptWait bounds the wait for the broker's PUBACK of a command; one not
// acknowledged by then does not count as sent.
const acceptWait = 10 * time.Second

// CommandsSpec is what StartCommands needs.
type CommandsSpec struct {
	// Sender is from Verifier: its identity names the sender's client id.
	// StartCommands gives it a clean session: a sender that kept one would
	// have paho send again, after a reconnect, every command whose PUBACK
	// the outage took, which the device may well have received already;
	// and paho sends what is published while it does so twice (once from
	// its store). Either would count as the device's duplicate.
	Sender   device.Config
	Devices  []device.Identity
	Interval time.Duration // between commands to a device
	// SeenFromBroker says the devices are external clients, known only from
	// the broker's log: a device listens once the log shows it subscribe
	// to its commands with QoS 1, and receives a command when the log shows
	// it acknowledge it. Our own devices listen from the start and report
	// their receipts themselves (Received).
	SeenFromBroker bool
	Notify         func() // signalled on every receipt
}

// Commands is the cloud side of the downstream. Its own connection sends
// every device a command (a cloud-to-device message with QoS 1 on its
// command topic, carrying a sequence number) every interval, and after
// each heal faster until the device has received one again, so that the
// cadence is not what is measured: to every device the moment the broker
// answers again (and the sender is back); to a device the moment it
// reconnects or subscribes again, and from then on after 20 ms, 40 ms, ...
// up to 200 ms. A device not seen back gets them at the usual cadence:
// commands to a fleet still in its backoff would only load the broker the
// devices are reconnecting to. Publishing happens on one goroutine of its own, never under a
// lock and never in the callers. A command counts as sent once the broker
// acknowledged it. It keeps what it sent and what was received, and what
// the broker saw of each device's subscriptions and sessions, for the
// cycle rows (c2dLog).
type Commands struct {
	spec     CommandsSpec
	verifier // the sender's connection, and its reconnect after a restart
	wake     chan struct{}
	queued   chan struct{} // signalled when unacked has new commands for collect
	stop     context.CancelFunc
	ctx      context.Context
	done     chan struct{}

	mu      sync.Mutex
	devs    map[string]*downstream // into one slice for the fleet
	ids     []string
	backs   []time.Time // when the sender's connection came back
	unacked []unacked   // handed over, for collect
	closed  bool
	quiet   bool // send nothing (Quiet)
}

// downstream is what is known of one device's commands.
type downstream struct {
	topic   string // where its commands go
	listens bool
	seq     int64
	log     c2dLog
	handed  []handed         // commands handed to the sender, in the order of their seq
	digests map[string]int64 // seq by the payload's digest, for receipts known from the broker's acknowledgements (SeenFromBroker only)
	waiting []sentCmd        // sent and not received yet

	pending bool      // a heal happened and nothing was received since
	backAt  time.Time // the receipt that ended the last pending
	kept    bool      // the broker had its session when it last connected: it queued what was sent meanwhile
	seen    bool      // pending, and it was seen reconnecting or subscribing: the fast cadence
	step    time.Duration
	next    time.Time
}

// handed is a command handed to the sender's connection.
type handed struct {
	seq      int64
	at       time.Time
	resolved bool // its PUBACK was read, or given up on
}

// sentCmd is one command sent (acknowledged by the broker).
type sentCmd struct {
	seq int64
	at  time.Time // when it was handed over
}

// receipt is one command received.
type receipt struct {
	seq int64
	at  time.Time
}

// sessionAt is a CONNACK of the broker to a device.
type sessionAt struct {
	at      time.Time
	present bool
}

// c2dLog is what is known of one device's commands: what was sent, each
// receipt, what the broker saw of its subscriptions and sessions, and when
// the sender's own connection came back.
type c2dLog struct {
	listens    bool
	sent       []sentCmd
	received   []receipt
	subscribes []time.Time // SUBSCRIBEs of its commands, with QoS 1 or 2
	connacks   []sessionAt
	senderBack []time.Time
	unmatched  int // acknowledgements of commands that match none sent
}

// CloudID is the client id of the commands' sender for a device id base.
func CloudID(base string) string { return base + "-cloud" }

// StartCommands connects the sender and starts sending commands to the
// devices of spec.
func StartCommands(ctx context.Context, spec CommandsSpec) (*Commands, error) {
	sender := spec.Sender
	sender.CleanSession = true
	dev, err := device.New(sender)
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	if err := dev.Connect(ctx); err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	c := &Commands{spec: spec, wake: make(chan struct{}, 1), queued: make(chan struct{}, 1), done: make(chan struct{}),
		devs: make(map[string]*downstream, len(spec.Devices)), ids: make([]string, len(spec.Devices))}
	c.verifier = newVerifier(c.resume)
	c.verifier.dev = dev
	now := time.Now()
	all := make([]downstream, len(spec.Devices))
	for i, id := range spec.Devices {
		c.ids[i] = id.DeviceID
		// Spread over the interval, so that the devices' commands do not all
		// leave in one tick.
		next := now.Add(spec.Interval * time.Duration(i) / time.Duration(len(spec.Devices)))
		d := &all[i]
		d.topic, d.listens, d.next = id.CommandTopic(), !spec.SeenFromBroker, next
		if spec.SeenFromBroker {
			d.digests = map[string]int64{}
		}
		c.devs[id.DeviceID] = d
	}
	c.ctx, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	go c.run()
	go c.collect()
	return c, nil
}

// Close stops sending and disconnects.
func (c *Commands) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stop()
	<-c.done
	c.verifier.close()
}

// outgoing is a command to publish.
type outgoing struct {
	id, topic string
	seq       int64
	payload   []byte
	at        time.Time
}

func (c *Commands) run() {
	defer close(c.done)
	tick := time.NewTicker(tickStep)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		case <-c.wake:
		}
		for _, o := range c.due(time.Now()) {
			p := c.dev.PublishTo(o.topic, o.payload)
			if p == nil {
				continue // not connected: nothing sent; the sender comes back at the next heal or settle
			}
			c.handOver(o, p)
		}
	}
}

// handOver records o as handed to the sender's connection (p), for collect.
func (c *Commands) handOver(o outgoing, p *device.Pending) {
	c.mu.Lock()
	if d := c.devs[o.id]; d != nil {
		d.handed = append(d.handed, handed{seq: o.seq, at: o.at})
		if d.digests != nil {
			d.digests[brokerlog.Digest(o.payload)] = o.seq
		}
	}
	c.unacked = append(c.unacked, unacked{p, o})
	c.mu.Unlock()
	select {
	case c.queued <- struct{}{}:
	default:
	}
}

// Quiet stops sending (on) until it is called again (off).
func (c *Commands) Quiet(on bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.quiet = on
	c.mu.Unlock()
	c.wakeUp()
}

// due returns the commands due at now, and schedules the next ones.
func (c *Commands) due(now time.Time) []outgoing {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.quiet {
		return nil
	}
	var out []outgoing
	for _, id := range c.ids {
		d := c.devs[id]
		if now.Before(d.next) {
			continue
		}
		if d.seen {
			d.step = min(2*d.step, fastCap, c.spec.Interval)
		} else {
			d.step = c.spec.Interval
		}
		d.next = now.Add(d.step)
		d.seq++
		payload, _ := json.Marshal(device.Telemetry{DeviceID: id, Seq: d.seq, SentAt: now.UnixNano()})
		out = append(out, outgoing{id, d.topic, d.seq, payload, now})
	}
	return out
}

// unacked is a command handed to the sender's connection, waiting for the
// broker's PUBACK.
type unacked struct {
	p *device.Pending
	o outgoing
}

// collect waits for the PUBACKs of the commands handed over, in the order
// they were handed over (the order the broker acknowledges them on the one
// connection), on one goroutine: a goroutine per command would cost a
// fleet's burst after a heal a stack each.
func (c *Commands) collect() {
	for {
		c.mu.Lock()
		q := c.unacked
		c.unacked = nil
		c.mu.Unlock()
		if len(q) == 0 {
			select {
			case <-c.ctx.Done():
				return
			case <-c.queued:
			}
			continue
		}
		for _, u := range q {
			if c.ctx.Err() != nil {
				return
			}
			c.accepted(u.p, u.o)
		}
	}
}

// accepted waits for the broker's PUBACK of o, within acceptWait of its
// hand-over, and records the outcome.
func (c *Commands) accepted(p *device.Pending, o outgoing) {
	ctx, cancel := context.WithDeadline(c.ctx, o.at.Add(acceptWait))
	defer cancel()
	_, err := p.Wait(ctx)
	c.acked(o, err == nil)
}

// acked records that the broker acknowledged o (ok), or that it will not
// be known to have: only an acknowledged command counts as sent. One the
// device has not received yet is waited for when the cycle settles (see
// receipt for what the first receipt after a heal drops), unless it was
// sent before that receipt to a device whose session the broker did not
// keep: the broker had no subscription for it then.
func (c *Commands) acked(o outgoing, ok bool) {
	c.mu.Lock()
	d := c.devs[o.id]
	if d != nil {
		for i := len(d.handed) - 1; i >= 0; i-- { // most likely among the newest
			if d.handed[i].seq == o.seq {
				d.handed[i].resolved = true
				break
			}
		}
		s := sentCmd{o.seq, o.at}
		if ok {
			d.log.sent = append(d.log.sent, s)
		}
		received := slices.ContainsFunc(d.log.received, func(r receipt) bool { return r.seq == o.seq })
		if ok && !received && (d.pending || d.kept || !o.at.Before(d.backAt)) {
			// One sent an interval ago or more is never waited for again
			// (Settled): a device that does not listen yet, as a fleet
			// connects, would otherwise keep every one sent to it.
			d.waiting = slices.DeleteFunc(d.waiting, func(w sentCmd) bool { return time.Since(w.at) >= c.spec.Interval })
			d.waiting = append(d.waiting, s)
		}
	}
	c.mu.Unlock()
	if d != nil && c.spec.Notify != nil {
		c.spec.Notify() // a cycle settling may have waited for this PUBACK
	}
}

// wakeUp has the sending goroutine look for due commands now.
func (c *Commands) wakeUp() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fastLocked makes d due now at the start of the fast cadence; c.mu is held.
func fastLocked(d *downstream, now time.Time) {
	d.seen, d.step, d.next = true, fastStep/2, now
}

// Nudge runs after a heal, once the broker answers again: every device
// that listens waits for a command and gets one at once, and the sender is
// brought back if the broker dropped it.
func (c *Commands) Nudge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	now := time.Now()
	for _, d := range c.devs {
		if d.listens { // one that never subscribed is sent to at the usual cadence
			d.pending, d.seen, d.next = true, false, now
		}
	}
	closed := c.closed
	c.mu.Unlock()
	c.wakeUp()
	if !closed {
		c.reconnect()
	}
}

// resume runs when the sender is connected again: every device still
// waiting gets a command at once. The sender counts as back from its
// CONNACK, which under load can be long before its Connect returns: it may
// publish in between, and a command received before the sender was back
// would make a negative downstream.
func (c *Commands) resume() {
	c.mu.Lock()
	now := time.Now()
	back := now
	if at := c.verifier.dev.ConnackAt(); !at.IsZero() && at.Before(now) {
		back = at
	}
	c.backs = append(c.backs, back)
	for _, d := range c.devs {
		if d.pending {
			d.next = now
		}
	}
	c.mu.Unlock()
	c.wakeUp()
}

// poke sends device id a command at once if it is waiting for one since
// the heal, and starts its fast cadence. It never blocks.
func (c *Commands) poke(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	d := c.devs[id]
	due := d != nil && d.pending
	if due {
		fastLocked(d, time.Now())
	}
	c.mu.Unlock()
	if due {
		c.wakeUp()
	}
}

// connected records that our device id connected, and whether the broker
// had its session, and pokes it: a session the broker kept is a
// subscription.
func (c *Commands) connected(id string, session bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if d := c.devs[id]; d != nil {
		d.kept = session
	}
	c.mu.Unlock()
	c.poke(id)
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
		d.waiting = slices.DeleteFunc(d.waiting, func(s sentCmd) bool { return s.seq == seq })
		if d.pending {
			d.pending, d.seen, d.backAt = false, false, at
			d.next = at.Add(c.spec.Interval)
			if !d.kept {
				// Sent before it listened again, with a new session: the
				// broker dropped what did not arrive.
				d.waiting = slices.DeleteFunc(d.waiting, func(s sentCmd) bool { return s.at.Before(at) })
			}
		}
	}
	c.mu.Unlock()
	if d != nil && c.spec.Notify != nil {
		c.spec.Notify()
	}
}

// Observe follows the broker's log. A device's connect, or a SUBSCRIBE to
// its commands, sends it a command at once if it is waiting for one; its
// subscriptions and sessions are kept. Seen from the broker only, a
// SUBSCRIBE with QoS 1 or 2 makes it listen, and an acknowledgement of a
// command is its receipt. Subscriptions and acknowledgements count for
// the device whose command topic they are about, whichever client made
// them (a client may take its commands on a connection of its own);
// sessions are the device's own.
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
			if c.spec.SeenFromBroker { // our own devices say so themselves (connected)
				d.kept = e.SessionPresent
			}
		}
	case brokerlog.Subscribe:
		for _, id := range c.subscribers(e.Subscriptions) {
			d := c.devs[id]
			if c.spec.SeenFromBroker {
				d.listens = true
			}
			d.log.subscribes = append(d.log.subscribes, e.At)
			poke = append(poke, id)
		}
	case brokerlog.Ack:
		if !c.spec.SeenFromBroker {
			break // our devices say what they received, at the moment they did
		}
		if id, ok := deviceOfTopic(e.Topic); ok && c.devs[id] != nil && c.devs[id].topic == e.Topic {
			if seq = c.devs[id].digests[e.Digest]; seq != 0 {
				got = id
			} else {
				c.devs[id].log.unmatched++
			}
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

// subscribers are the devices whose command topic one of subs matches
// with QoS 1 or 2; c.mu is held. A filter that names a device (no wildcard
// in its id) is looked up; one that cannot match a command topic (its
// first level is not "devices", "+" or "#") is passed over; others are
// matched against every device.
func (c *Commands) subscribers(subs []brokerlog.Subscription) []string {
	var out []string
	add := func(id string) {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	for _, s := range subs {
		if s.QoS != 1 && s.QoS != 2 {
			continue // QoS 0: receipts cannot be seen; 128: refused
		}
		first, _, _ := strings.Cut(s.Topic, "/")
		if first != "devices" && first != "+" && first != "#" {
			continue
		}
		if id, ok := deviceOfTopic(s.Topic); ok && !strings.ContainsAny(id, "+#") {
			if d := c.devs[id]; d != nil && topicMatch(s.Topic, d.topic) {
				add(id)
			}
			continue
		}
		for _, id := range c.ids {
			if topicMatch(s.Topic, c.devs[id].topic) {
				add(id)
			}
		}
	}
	return out
}

// Settled reports whether no command is in flight to a device that
// listens again: every one handed over before cutoff has its PUBACK (or
// never will), and every one waited for (see acked) sent before cutoff,
// and less than an interval ago, has been received. A cycle's row counts
// what was sent before its end: without this wait, a command still on its
// way to the device would count as lost. It brings the sender back if the
// broker dropped it, since the broker is up while a cycle settles.
func (c *Commands) Settled(cutoff time.Time) bool {
	if c == nil {
		return true
	}
	if !c.back() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devs {
		if !d.listens || d.pending {
			continue
		}
		for _, h := range d.handed {
			if !h.resolved && h.at.Before(cutoff) {
				return false
			}
		}
		for _, s := range d.waiting {
			if s.at.Before(cutoff) && time.Since(s.at) < c.spec.Interval {
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

// log returns a copy of device id's log.
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
	l.senderBack = slices.Clone(c.backs)
	return l
}

// Forget drops what happened before t, and ends the fast cadence: a device
// still waiting for a command when its cycle ended gets them at the usual
// cadence again.
func (c *Commands) Forget(t time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.backs = slices.DeleteFunc(c.backs, func(at time.Time) bool { return at.Before(t) })
	old := map[int64]bool{} // one for all devices: Connect forgets for 10 000 at once
	for _, d := range c.devs {
		d.pending, d.seen = false, false
		clear(old)
		for _, h := range d.handed {
			if h.at.Before(t) {
				old[h.seq] = true
			}
		}
		d.handed = emptied(slices.DeleteFunc(d.handed, func(h handed) bool { return old[h.seq] }))
		d.waiting = emptied(slices.DeleteFunc(d.waiting, func(s sentCmd) bool { return old[s.seq] }))
		d.log.sent = emptied(slices.DeleteFunc(d.log.sent, func(s sentCmd) bool { return old[s.seq] }))
		d.log.received = emptied(slices.DeleteFunc(d.log.received, func(r receipt) bool { return r.at.Before(t) || old[r.seq] }))
		d.log.subscribes = slices.DeleteFunc(d.log.subscribes, func(at time.Time) bool { return at.Before(t) })
		d.log.connacks = slices.DeleteFunc(d.log.connacks, func(s sessionAt) bool { return s.at.Before(t) })
		d.log.unmatched = 0
		for k, seq := range d.digests {
			if old[seq] {
				delete(d.digests, k)
			}
		}
	}
}

// emptied gives back the array of a list that Forget emptied.
func emptied[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
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
// device reconnected (zero if it did not). c.ReadyAt, c.FirstC2DAt (from
// firstCommand) and, for our own devices, c.Session must be set.
// Definitions (README "Timeline"):
//
//   - resubscribed_at: the first SUBSCRIBE to its commands the broker saw
//     from the heal on (a client may take its commands on a connection of
//     its own, which can come back before the one it publishes on).
//   - commands_back_at: when the sender's own connection came back from the
//     heal on (zero when it kept it): downstream counts from it, if later
//     than ready_at, since no command could be sent before.
//   - session: seen from the broker, its first CONNACK to the device from
//     the heal on, if it reconnected.
//   - c2d_sent: commands the broker acknowledged to the sender that were
//     handed over in [Start, End); c2d_received: those of them received,
//     once or more; c2d_duplicated: the extra copies; c2d_lost: those of
//     them sent while it demonstrably listened, and never received: from
//     the first command it received in the cycle until we began injecting
//     the fault, and from first_c2d_at on; and, when the broker kept its
//     session (SessionResumed), in between too, since the broker then
//     queues them. What was sent otherwise, while it had no subscription
//     or the broker was going away, the broker drops by design.
func downstreamOf(c *Cycle, cmds c2dLog, m Marks, reconnected time.Time) {
	c.Listens = cmds.listens
	from := m.healFrom()
	for _, at := range cmds.subscribes {
		if !from.IsZero() && !at.Before(from) {
			c.ResubscribedAt = ns(at)
			break
		}
	}
	for _, at := range cmds.senderBack {
		if !from.IsZero() && !at.Before(from) {
			c.CommandsBackAt = ns(at)
			break
		}
	}
	if c.Session == "" && !reconnected.IsZero() {
		for _, s := range cmds.connacks {
			if !from.IsZero() && !s.at.Before(from) {
				c.Session = sessionName(s.present)
				break
			}
		}
	}
	got := map[int64]int{}
	for _, r := range cmds.received {
		got[r.seq]++
	}
	listenedFrom := firstCommand(cmds, m.Start)
	backAt := m.End
	if c.FirstC2DAt != 0 {
		backAt = time.Unix(0, c.FirstC2DAt)
	}
	kept := c.Session == SessionResumed
	listened := func(at time.Time) bool {
		if listenedFrom.IsZero() || at.Before(listenedFrom) {
			return false
		}
		return at.Before(m.Inject) || kept || !at.Before(backAt)
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

// sessionName is the Session value of a CONNACK's session-present flag.
func sessionName(present bool) string {
	if present {
		return SessionResumed
	}
	return SessionNew
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
