//go:build !linux

package localbroker

import (
	"context"
	"os/exec"
	"syscall"
)

// sysProcAttr puts the broker in a process group of its own. Outside
// Linux there is no parent-death signal: a broker outlives a SIGKILLed
// parent there.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func startLocked(cmd *exec.Cmd) error { return cmd.Start() }

// awaitStopped trusts that SIGSTOP takes effect once sent.
func awaitStopped(context.Context, int) error { return nil }
