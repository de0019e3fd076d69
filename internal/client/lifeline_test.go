package client

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/host"
)

// helperEnv makes the test binary act as a supervising process (see
// TestMain): it supervises the command in the variable's value, prints its
// output to stdout and waits to be killed.
const helperEnv = "MTTR_CLIENT_TEST_SUPERVISE"

func TestMain(m *testing.M) {
	if cmd := os.Getenv(helperEnv); cmd != "" {
		s, err := Supervise([]Spec{{Name: "d", Command: cmd}}, os.Stdout, time.Second)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		defer s.Stop(context.Background())
		select {}
	}
	os.Exit(m.Run())
}

// TestClientsDieWithKilledSupervisor kills a supervising process with
// SIGKILL, which runs no clean-up, and checks that its client and the
// client's own child die with it: the child ignores SIGTERM and is not
// the client's process (sh -c runs it as a child, as it runs a python
// client), so only the lifeline's watcher can end it.
func TestClientsDieWithKilledSupervisor(t *testing.T) {
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+`=trap '' TERM; echo "shell $$"; sh -c 'trap "" TERM; echo "child $$"; exec sleep 300'`)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	var shell, child int
	sc := bufio.NewScanner(out)
	for (shell == 0 || child == 0) && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[2] == "shell" {
			shell, _ = strconv.Atoi(f[3])
		}
		if len(f) == 4 && f[2] == "child" {
			child, _ = strconv.Atoi(f[3])
		}
	}
	if shell == 0 || child == 0 {
		t.Fatalf("did not see the client start (scan: %v)", sc.Err())
	}
	t.Cleanup(func() { _ = syscall.Kill(-shell, syscall.SIGKILL) })
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	if !exited(t, shell) {
		t.Errorf("client shell %d outlived its supervisor", shell)
	}
	if !exited(t, child) {
		t.Errorf("client's child %d outlived its supervisor", child)
	}
}

// TestFindMarkedEnds finds a process by the variable it was started with,
// in a process group of its own as a client's, and ends that group.
func TestFindMarkedEnds(t *testing.T) {
	const name = "MTTR_CLIENT_TEST_MARK"
	value := "owner-" + strconv.Itoa(os.Getpid())
	// The child is a subshell that blocks reading fd 3, a pipe the test
	// holds open: it execs nothing, so its environment is not being
	// replaced by an exec when FindMarked reads it.
	hold, release, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Close(); _ = release.Close() })
	cmd := exec.Command("/bin/sh", "-c", `{ read x <&3; } & echo "$!"; wait`)
	cmd.ExtraFiles = []*os.File{hold}
	cmd.Env = append(os.Environ(), name+"="+value)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("no pid from the shell")
	}
	sleeper, _ := strconv.Atoi(strings.TrimSpace(sc.Text()))

	marked, err := FindMarked(name)
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, m := range marked {
		if m.Value != value || m.PGID != cmd.Process.Pid {
			t.Errorf("marked %+v, want value %s in group %d", m, value, cmd.Process.Pid)
		}
		found = append(found, m.PID)
	}
	if len(found) != 2 {
		t.Fatalf("found %v, want the shell %d and its child %d", found, cmd.Process.Pid, sleeper)
	}
	if err := marked[0].End(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the shell survived End")
	}
	if !exited(t, sleeper) {
		t.Errorf("its child %d survived End", sleeper)
	}
	if again, _ := FindMarked(name); len(again) != 0 {
		t.Errorf("still marked after End: %+v", again)
	}
}

// TestStopWithEscapedChild stops a client whose child left its process
// group (setsid) and keeps the client's output open: Stop must return all
// the same, within the grace period and the time output is still read.
func TestStopWithEscapedChild(t *testing.T) {
	var log syncBuffer
	log.written = make(chan struct{}, 1)
	s, err := Supervise([]Spec{{Name: "d", Command: `setsid sh -c 'echo "escaped $$"; exec sleep 300' & exec sleep 300`}}, &log, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var escaped int
	for escaped == 0 {
		select {
		case <-log.written:
		case <-time.After(10 * time.Second):
			t.Fatalf("no escaped child seen:\n%s", log.String())
		}
		for _, line := range strings.Split(log.String(), "\n") {
			if f := strings.Fields(line); len(f) == 4 && f[2] == "escaped" {
				escaped, _ = strconv.Atoi(f[3])
			}
		}
	}
	t.Cleanup(func() { _ = syscall.Kill(escaped, syscall.SIGKILL) })
	stopped := make(chan struct{})
	go func() { s.Stop(context.Background()); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(300*time.Millisecond + outputDelay + 5*time.Second):
		t.Fatal("Stop hung on the output an escaped child holds")
	}
}

// TestEndSparesOthersGroups ends a marked process that sits in a group
// led by an unmarked one: only the marked process goes.
func TestEndSparesOthersGroups(t *testing.T) {
	const name = "MTTR_CLIENT_TEST_MARK"
	value := "spare-" + strconv.Itoa(os.Getpid())
	// An unmarked leader whose child carries the mark. Both block reading
	// fd 3, a pipe the test holds open, so neither exits or execs on its
	// own while the test looks: the leader outlives its child, and the
	// child's environment is not being replaced by an exec when
	// FindMarked reads it.
	hold, release, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Close(); _ = release.Close() })
	leader := exec.Command("/bin/sh", "-c", `env `+name+`=`+value+` sh -c 'echo "$$"; read x <&3' & wait; read y <&3`)
	leader.ExtraFiles = []*os.File{hold}
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-leader.Process.Pid, syscall.SIGKILL); _ = leader.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("no pid from the shell")
	}
	child, _ := strconv.Atoi(strings.TrimSpace(sc.Text()))
	marked, err := FindMarked(name)
	if err != nil || len(marked) != 1 || marked[0].PID != child || marked[0].PGID != leader.Process.Pid {
		t.Fatalf("FindMarked = %+v, %v; want child %d in group %d", marked, err, child, leader.Process.Pid)
	}
	if err := marked[0].End(); err != nil {
		t.Fatal(err)
	}
	if !exited(t, child) {
		t.Errorf("marked child %d survived End", child)
	}
	if !host.Alive(leader.Process.Pid) {
		t.Error("the unmarked leader was ended too")
	}
}
