package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
)

// TestNoAnswer points the engine at a socket that accepts connections and
// never answers, as a frozen engine's does: Connect gives up after the call
// timeout and names the call and DOCKER_HOST. A caller's cancellation is
// not mistaken for it.
func TestNoAnswer(t *testing.T) {
	dir, err := os.MkdirTemp("", "engine")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	t.Setenv("DOCKER_HOST", "unix://"+sock)

	_, err = ConnectWithin(t.Context(), 200*time.Millisecond)
	var na *NoAnswerError
	if !errors.As(err, &na) || na.Call != "ping" || na.After != 200*time.Millisecond {
		t.Fatalf("ConnectWithin = %v, want no answer to ping", err)
	}
	if want := "the Docker engine did not answer ping within 200ms (DOCKER_HOST=unix://" + sock + ")"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	// A deadline of the caller's that comes first is reported with the
	// time the call had.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = ConnectWithin(ctx, time.Minute)
	if !errors.As(err, &na) || na.After >= time.Minute || !strings.Contains(err.Error(), "did not answer ping within") {
		t.Errorf("ConnectWithin with a nearer deadline = %v", err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if _, err := ConnectWithin(ctx, time.Minute); errors.As(err, &na) || !errors.Is(err, context.Canceled) {
		t.Errorf("ConnectWithin cancelled = %v, want context.Canceled", err)
	}
}

// TestBeingRemoved tells the engine's answer to a removal under way
// (another run tidying the same leftovers) from other conflicts.
func TestBeingRemoved(t *testing.T) {
	under := fmt.Errorf("Error response from daemon: removal of container 3068 is already in progress: %w", cerrdefs.ErrConflict)
	other := fmt.Errorf("Error response from daemon: You cannot remove a running container: %w", cerrdefs.ErrConflict)
	plain := errors.New("removal of container 3068 is already in progress")
	if !beingRemoved(under) || beingRemoved(other) || beingRemoved(plain) {
		t.Errorf("beingRemoved: %v %v %v, want true false false", beingRemoved(under), beingRemoved(other), beingRemoved(plain))
	}
}
