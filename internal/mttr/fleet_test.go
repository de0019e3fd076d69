package mttr

import (
	"testing"

	"github.com/mttrlab/mttr/internal/device"
)

// TestDriverAsks guards how a device's messages are asked for: a driver
// waits in the fleet's queue once however often it is asked before a
// publisher takes it, and the publisher then sends one message for each
// kind it was asked for (the clock's tick, a nudge or the first message, a
// reconnect), none for a tick while the device is quiet.
func TestDriverAsks(t *testing.T) {
	cfgs, _ := configs("127.0.0.1:1", nil, 1, fastTimings) // never connected: each publish fails at once
	dev, err := device.New(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		quiet bool
		asks  []uint32
		want  int
	}{
		{"ticks", false, []uint32{wantTick, wantTick}, 1},
		{"each kind", false, []uint32{wantTick, wantNow, wantBack, wantNow, wantBack}, 3},
		{"quiet tick", true, []uint32{wantTick, wantTick}, 0},
		{"quiet nudge", true, []uint32{wantTick, wantNow}, 1},
		{"quiet reconnect", true, []uint32{wantBack}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Fleet{drivers: make([]driver, 1), work: make(chan *driver, len(tc.asks)), changed: make(chan struct{}, 1)}
			d := &f.drivers[0]
			d.fleet, d.dev = f, dev
			d.quiet.Store(tc.quiet)
			for _, a := range tc.asks {
				d.ask(a)
			}
			if len(f.work) != 1 {
				t.Fatalf("driver queued %d times, want once", len(f.work))
			}
			(<-f.work).take(t.Context())
			got := 0
			for _, o := range d.snapshot() {
				if o.kind == obsPublished {
					got++
				}
			}
			if got != tc.want || d.wants.Load() != 0 {
				t.Errorf("%d messages published, %b still wanted; want %d, none", got, d.wants.Load(), tc.want)
			}
		})
	}
}
