// Package bedcost reads what the test bed's own processes cost the machine:
// this process's CPU, a set of process groups' CPU, the whole host's busy
// CPU, and how late this process wakes from a timer. It believes a
// measurement of a client is only as good as the machine's spare capacity
// while it was taken, so every reading is cheap (a few files under /proc,
// no polling but the lateness probe's timer) and none of them changes what
// it reads. Readings are cumulative counters: a window's cost is the
// difference of two.
package bedcost

import (
	"context"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Self is this process's CPU so far, user and system, all threads.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Cores is how many CPUs the host's busy time is shared among.
func Cores() int { return runtime.NumCPU() }

// Probe measures how late this process wakes from a timer: a ticker that
// asks to be woken every interval and records how far past each deadline
// it ran. Its worst lateness in a window is the resolution of the
// timestamps this process took in it.
type Probe struct {
	mu    sync.Mutex
	worst time.Duration
	stop  context.CancelFunc
	done  chan struct{}
}

// ProbeInterval is the probe's period: 100 wake-ups a second.
const ProbeInterval = 10 * time.Millisecond

// StartProbe starts a probe that runs until ctx ends or Stop.
func StartProbe(ctx context.Context, interval time.Duration) *Probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &Probe{stop: cancel, done: make(chan struct{})}
	go p.run(ctx, interval)
	return p
}

func (p *Probe) run(ctx context.Context, interval time.Duration) {
	defer close(p.done)
	t := time.NewTimer(interval)
	defer t.Stop()
	next := time.Now().Add(interval)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.record(now.Sub(next))
			// The next deadline is one interval from now: a late wake-up
			// is counted once, not again by every deadline it skipped.
			next = now.Add(interval)
			t.Reset(interval)
		}
	}
}

func (p *Probe) record(late time.Duration) {
	p.mu.Lock()
	p.worst = max(p.worst, late)
	p.mu.Unlock()
}

// Take returns the worst lateness since the last Take (or the start) and
// starts a new window.
func (p *Probe) Take() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.worst
	p.worst = 0
	return w
}

// Stop ends the probe.
func (p *Probe) Stop() {
	p.stop()
	<-p.done
}
