package host

import (
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestAliveNotZombie checks that a process that has exited but was not yet
// waited for (a zombie) does not count as alive, and that Stat says so.
func TestAliveNotZombie(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	// Until Wait it is a zombie. (EOF on its output comes a moment before
	// it has exited.)
	if gone, err := AwaitExit(cmd.Process.Pid, 10*time.Second); err != nil || !gone {
		t.Fatalf("the child did not exit: %v, %v", gone, err)
	}
	if Alive(cmd.Process.Pid) {
		t.Errorf("zombie %d counted as alive", cmd.Process.Pid)
	}
	if p, err := Stat(cmd.Process.Pid); err != nil || p.State != 'Z' || p.PPID != os.Getpid() {
		t.Errorf("Stat(zombie) = %+v, %v", p, err)
	}
	if kids := Children(os.Getpid()); len(kids) != 1 || kids[0] != cmd.Process.Pid {
		t.Errorf("Children = %v, want [%d]", kids, cmd.Process.Pid)
	}
	_ = cmd.Wait()
	if !Alive(os.Getpid()) {
		t.Error("this process counted as gone")
	}
	if Alive(cmd.Process.Pid) {
		t.Errorf("reaped %d counted as alive", cmd.Process.Pid)
	}
}

// TestReapBeforeWait calls back while the child is a zombie: its process
// id still names it.
func TestReapBeforeWait(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var state byte
	_, err := Reap(cmd, func() {
		p, _ := Stat(cmd.Process.Pid)
		state = p.State
	})
	if state != 'Z' || cmd.ProcessState.ExitCode() != 3 || err == nil {
		t.Errorf("state at the call %q, exit %d, err %v", state, cmd.ProcessState.ExitCode(), err)
	}
}

func TestMachine(t *testing.T) {
	if l := Machine(); l.Files == 0 || l.Ports == 0 || l.Available == 0 {
		t.Errorf("Machine() = %+v: a limit of this Linux machine was not read", l)
	}
}
