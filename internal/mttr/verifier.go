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
	connecting atomic.Bool
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
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = v.dev.Connect(ctx)
	}()
}

func (v *verifier) close() {
	if v.dev != nil {
		v.dev.Close()
	}
}

// bySeq counts deliveries of our own devices' messages by device and
// sequence number, from the payload they carry.
type bySeq struct {
	verifier
	notify func()

	mu        sync.Mutex
	seen      map[string]map[int64]int // device -> seq -> deliveries
	distinct  atomic.Int64
	malformed atomic.Int64
}

func newBySeq(notify func()) *bySeq {
	return &bySeq{notify: notify, seen: make(map[string]map[int64]int)}
}

func (v *bySeq) deliver(_ string, payload []byte, _ time.Time) {
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

// drop forgets what was delivered of device's messages seqs.
func (v *bySeq) drop(device string, seqs []int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range seqs {
		delete(v.seen[device], s)
	}
}

// deliveries returns how often each of seqs was delivered for device.
func (v *bySeq) deliveries(device string, seqs []int64) map[int64]int {
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

// byTopic counts deliveries on each device's telemetry topic by arrival
// time, for clients whose payload is not ours.
type byTopic struct {
	verifier
	notify func()

	mu    sync.Mutex
	times map[string][]time.Time // device (from the topic) -> arrival times
}

func newByTopic(notify func()) *byTopic {
	return &byTopic{notify: notify, times: make(map[string][]time.Time)}
}

func (v *byTopic) deliver(topic string, _ []byte, at time.Time) {
	id, ok := deviceOfTopic(topic)
	if !ok {
		return
	}
	v.mu.Lock()
	v.times[id] = append(v.times[id], at)
	v.mu.Unlock()
	v.notify()
}

// forgetBefore forgets deliveries that arrived before t.
func (v *byTopic) forgetBefore(t time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, times := range v.times {
		v.times[id] = dropBefore(times, t)
	}
}

// between counts messages on device's telemetry topic that arrived in
// [from, to).
func (v *byTopic) between(device string, from, to time.Time) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(slices.DeleteFunc(slices.Clone(v.times[device]), func(at time.Time) bool {
		return at.Before(from) || !at.Before(to)
	}))
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
