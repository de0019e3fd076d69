package bedcost

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestParseStat guards the reading of a /proc/PID/stat line: the process
// group is the fifth field, the CPU the sum of utime, stime, cutime and
// cstime, and a command name with spaces and parentheses does not shift
// them.
func TestParseStat(t *testing.T) {
	line := []byte("4242 (a (b) c) S 1 4240 4240 0 -1 4194560 100 0 0 0 7 3 20 10 20 0 1 0 123 0 0")
	pgid, ticks, ok := parseStat(line)
	if !ok || pgid != 4240 || ticks != 40 {
		t.Errorf("parseStat = %d, %d, %v; want 4240, 40, true", pgid, ticks, ok)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 notanumber 3 4 5 6 7 8 9 10 11 12 13 14"} {
		if _, _, ok := parseStat([]byte(bad)); ok {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

// TestCounters guards that the counters count: a child group that spins
// for a while is charged at least part of it, the host's busy time and
// this process's CPU grow while this process spins, and none goes back.
func TestCounters(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("read from /proc")
	}
	spin := exec.Command("/bin/sh", "-c", `end=$(( $(date +%s) + 1 )); while [ "$(date +%s)" -le "$end" ]; do :; done`)
	spin.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := spin.Process.Pid
	host0, err := Host()
	if err != nil {
		t.Fatal(err)
	}
	self0 := Self()
	// Spin here too, until this process has had 100 ms of CPU: how much
	// of a core it gets in a given time is the machine's to say (a
	// loaded one gave 50 ms in 200), not the counters'.
	deadline := time.Now().Add(10 * time.Second)
	for Self()-self0 < 100*time.Millisecond && time.Now().Before(deadline) {
	}
	var during time.Duration
	for during == 0 && spin.ProcessState == nil {
		during = Groups([]int{pgid})
		if during == 0 {
			runtime.Gosched()
		}
	}
	if err := spin.Wait(); err != nil {
		t.Fatal(err)
	}
	host1, _ := Host()
	if d := Self() - self0; d < 100*time.Millisecond {
		t.Errorf("Self grew by %v over 10 s of spinning", d)
	}
	if d := host1 - host0; d < 100*time.Millisecond {
		t.Errorf("Host grew by %v while two processes spun", d)
	}
	if during <= 0 {
		t.Error("Groups charged nothing to a spinning group")
	}
	if Groups([]int{os.Getpid() + 1<<22}) != 0 || Groups(nil) != 0 {
		t.Error("Groups charged a group that does not exist")
	}
}

// TestProbeWindows guards that Take returns the worst lateness recorded
// since the last Take, and that the next window starts afresh.
func TestProbeWindows(t *testing.T) {
	p := &Probe{}
	for _, late := range []time.Duration{2, 5, 3} {
		p.record(late * time.Millisecond)
	}
	if got := p.Take(); got != 5*time.Millisecond {
		t.Errorf("Take = %v, want 5ms", got)
	}
	if got := p.Take(); got != 0 {
		t.Errorf("Take of an empty window = %v, want 0", got)
	}
}

// TestProbeSeesABusyProcess guards that the running probe notices a
// process with no thread to spare. With a goroutine spinning on every P,
// the probe's timer waits for the scheduler to preempt one (every 10 ms):
// among some 300 deadlines of 1 ms, the worst is at least 1 ms late.
func TestProbeSeesABusyProcess(t *testing.T) {
	p := StartProbe(context.Background(), time.Millisecond)
	defer p.Stop()
	stop := make(chan struct{})
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	close(stop)
	if late := p.Take(); late < time.Millisecond {
		t.Errorf("Take after a busy spell = %v, want ≥ 1ms", late)
	}
}
