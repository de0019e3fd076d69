package mttr

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/device"
)

// TelemetryTopics matches every device's telemetry topic.
const TelemetryTopics = "devices/+/messages/events/"

// Verifier returns the verifier's configuration made from a device's. The
// verifier keeps its session (clean session false), so that a broker that
// holds a session for it (the lab's broker makes one for this client id
// before it listens) queues what devices publish before the verifier is
// back. It does not reconnect on its own but when the experiment has seen
// the broker ready again, so that it does not hammer a broker that is
// starting.
func Verifier(cfg device.Config) device.Config {
	cfg.ManualReconnect = true
	cfg.CleanSession = false
	cfg.QoS = 1
	return cfg
}

// verifier is the subscriber's connection, shared by the two ways of
// counting what it receives.
type verifier struct {
	dev        *device.Device
	notify     func() // signalled on every delivery, and when it is back
	connecting atomic.Bool
	stop       context.CancelFunc // ends a reconnect under way (close)
	ctx        context.Context
}

func newVerifier(notify func()) verifier {
	ctx, stop := context.WithCancel(context.Background())
	return verifier{notify: notify, ctx: ctx, stop: stop}
}

// connectVerifier connects a verifier subscribed to every device's
// telemetry topic, delivering each message to deliver.
func connectVerifier(ctx context.Context, cfg device.Config, deliver func(topic string, payload []byte, at time.Time)) (*device.Device, error) {
	vdev, err := device.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := vdev.Connect(ctx); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	if err := vdev.Subscribe(ctx, TelemetryTopics, 1, deliver); err != nil {
		vdev.Close()
		return nil, fmt.Errorf("verifier: %w", err)
	}
	return vdev, nil
}

// reconnect connects the verifier again if it lost its connection; it
// returns at once and does nothing while an attempt is under way.
func (v *verifier) reconnect() {
	if v.dev == nil || v.dev.IsConnectionOpen() || !v.connecting.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.connecting.Store(false)
		ctx, cancel := context.WithTimeout(v.ctx, 10*time.Second)
		defer cancel()
		if v.dev.Connect(ctx) == nil {
			v.notify()
		}
	}()
}

// back reports whether the verifier is connected, and starts connecting it
// again when it is not. It is asked only while the broker is known to be
// up (a cycle settling): a verifier that knocked during a heal would be one
// more client provoking what it should only watch. aedes can close a
// persistent-session subscriber that it sends a message to twice, queued
// and live, at the moment it reconnects ("no such packet" when the second
// copy's acknowledgement finds the first one gone); what the devices send
// after that is queued for the verifier until it is back.
func (v *verifier) back() bool {
	if v.dev == nil || v.dev.IsConnectionOpen() {
		return true
	}
	v.reconnect()
	return false
}

func (v *verifier) close() {
	v.stop()
	if v.dev != nil {
		v.dev.Close()
	}
}

// bySeq counts deliveries of our own devices' messages by device and
// sequence number, from the payload they carry.
type bySeq struct {
	verifier

	mu        sync.Mutex
	seen      map[devSeq]int    // deliveries of each message
	ids       map[string]string // one copy of each device id for the keys, not one a message
	distinct  atomic.Int64
	malformed atomic.Int64
}

// devSeq names one message of one device. One map for the fleet, not one
// a device: a device with a message or two would cost a map's header and
// a group of slots.
type devSeq struct {
	device string
	seq    int64
}

func newBySeq(notify func()) *bySeq {
	return &bySeq{verifier: newVerifier(notify), seen: map[devSeq]int{}, ids: map[string]string{}}
}

func (v *bySeq) deliver(_ string, payload []byte, _ time.Time) {
	var t device.Telemetry
	if err := json.Unmarshal(payload, &t); err != nil || t.DeviceID == "" {
		v.malformed.Add(1)
		return
	}
	v.mu.Lock()
	id, ok := v.ids[t.DeviceID]
	if !ok {
		id = t.DeviceID
		v.ids[id] = id
	}
	k := devSeq{id, t.Seq}
	v.seen[k]++
	if v.seen[k] == 1 {
		v.distinct.Add(1)
	}
	v.mu.Unlock()
	v.notify()
}

// drop forgets what was delivered of device's messages seqs.
func (v *bySeq) drop(device string, seqs []int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range seqs {
		delete(v.seen, devSeq{device, s})
	}
}

// deliveries returns how often each of seqs was delivered for device.
func (v *bySeq) deliveries(device string, seqs []int64) map[int64]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[int64]int, len(seqs))
	for _, s := range seqs {
		if n := v.seen[devSeq{device, s}]; n > 0 {
			out[s] = n
		}
	}
	return out
}

// byTopic records what the verifier received on each device's telemetry
// topic, by the payload's digest (brokerlog.Digest), for clients whose
// payload is not ours: each message the broker logs can then be matched
// with the verifier's copy, whenever that arrived.
type byTopic struct {
	verifier

	mu  sync.Mutex
	got map[string][]delivery // device (from the topic) -> deliveries
}

type delivery struct {
	at     time.Time
	digest string
}

func newByTopic(notify func()) *byTopic {
	return &byTopic{verifier: newVerifier(notify), got: make(map[string][]delivery)}
}

func (v *byTopic) deliver(topic string, payload []byte, at time.Time) {
	id, ok := deviceOfTopic(topic)
	if !ok {
		return
	}
	v.mu.Lock()
	v.got[id] = append(v.got[id], delivery{at, brokerlog.Digest(payload)})
	v.mu.Unlock()
	v.notify()
}

// forgetBefore forgets deliveries that arrived before t.
func (v *byTopic) forgetBefore(t time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, ds := range v.got {
		v.got[id] = slices.DeleteFunc(ds, func(d delivery) bool { return d.at.Before(t) })
	}
}

// matched counts how many of digests (messages the broker received from
// device, one entry each) the verifier received, each copy matched once.
func (v *byTopic) matched(device string, digests []string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	v.match(device, digests, func(int) { n++ })
	return n
}

// take is matched, and forgets the copies it matched, so that a later
// cycle cannot count them again.
func (v *byTopic) take(device string, digests []string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	var used []int
	v.match(device, digests, func(i int) { used = append(used, i) })
	got := v.got[device]
	for k := len(used) - 1; k >= 0; k-- { // used is in ascending order
		got = slices.Delete(got, used[k], used[k]+1)
	}
	v.got[device] = got
	return len(used)
}

// match calls use with the index of every delivery of device that one of
// digests accounts for, in ascending order, each delivery at most once.
func (v *byTopic) match(device string, digests []string, use func(int)) {
	want := map[string]int{}
	for _, d := range digests {
		want[d]++
	}
	for i, d := range v.got[device] {
		if want[d.digest] > 0 {
			want[d.digest]--
			use(i)
		}
	}
}

// deviceOfTopic returns the device id in "devices/<id>/messages/events/".
func deviceOfTopic(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "/")
	return id, ok && id != ""
}
