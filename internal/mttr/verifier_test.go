package mttr

import (
	"testing"
	"time"
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

// Clients whose payload is not ours are counted by topic and time.
func TestByTopicCountsAndForgets(t *testing.T) {
	v := newByTopic(func() {})
	t0 := time.Now()
	v.deliver("devices/x/messages/events/", []byte("hello"), t0)
	v.deliver("devices/x/messages/events/", []byte("hello"), t0.Add(time.Second))
	v.deliver("elsewhere", []byte("hello"), t0)
	if n := v.between("x", t0, t0.Add(2*time.Second)); n != 2 {
		t.Errorf("between = %d, want 2", n)
	}
	if n := v.between("x", t0, t0.Add(time.Second)); n != 1 {
		t.Errorf("between excludes its end: %d, want 1", n)
	}
	v.forgetBefore(t0.Add(time.Millisecond))
	if n := v.between("x", t0, t0.Add(2*time.Second)); n != 1 {
		t.Errorf("after forgetBefore: %d, want 1", n)
	}
}
