package mttr

import (
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
)

func TestBySeqCountsAndForgets(t *testing.T) {
	v := newBySeq(func() {})
	t0 := time.Now()
	for _, seq := range []string{"1", "2", "2", "3"} {
		v.deliver("devices/d/messages/events/", []byte(`{"deviceId":"d","seq":`+seq+`,"sentAt":1}`), t0)
	}
	v.deliver("devices/d/messages/events/", []byte(`not json`), t0)
	if got := v.deliveries("d", []int64{1, 2, 3, 4}); got[1] != 1 || got[2] != 2 || got[3] != 1 || got[4] != 0 {
		t.Errorf("deliveries = %v", got)
	}
	if v.distinct.Load() != 3 || v.malformed.Load() != 1 {
		t.Errorf("distinct %d malformed %d", v.distinct.Load(), v.malformed.Load())
	}
	v.drop("d", []int64{1, 2})
	if got := v.deliveries("d", []int64{1, 2, 3}); len(got) != 1 || got[3] != 1 {
		t.Errorf("after drop: %v", got)
	}
}

// Clients whose payload is not ours are matched by the payload's digest.
func TestByTopicMatchesDigests(t *testing.T) {
	v := newByTopic(func() {})
	t0 := time.Now()
	v.deliver("devices/x/messages/events/", []byte("a"), t0)
	v.deliver("devices/x/messages/events/", []byte("b"), t0.Add(time.Second))
	v.deliver("devices/x/messages/events/", []byte("b"), t0.Add(time.Second))
	v.deliver("elsewhere", []byte("c"), t0)
	a, b, c := brokerlog.Digest([]byte("a")), brokerlog.Digest([]byte("b")), brokerlog.Digest([]byte("c"))
	if n := v.matched("x", []string{a, b, c}); n != 2 {
		t.Errorf("matched = %d, want 2 (c never arrived on x's topic)", n)
	}
	if n := v.matched("x", []string{b, b, b}); n != 2 {
		t.Errorf("matched copies = %d, want 2: each copy counts once", n)
	}
	if n := v.take("x", []string{b}); n != 1 {
		t.Errorf("take = %d, want 1", n)
	}
	if n := v.matched("x", []string{b, b}); n != 1 {
		t.Errorf("after taking one copy of b: %d matched, want the other copy only", n)
	}
	v.forgetBefore(t0.Add(time.Millisecond))
	if n := v.matched("x", []string{a, b}); n != 1 {
		t.Errorf("after forgetBefore: %d, want 1 (b's second copy)", n)
	}
}
