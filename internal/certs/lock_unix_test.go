//go:build unix

package certs

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLockWaitsForItsHolder: a second Lock of a pair's directory waits
// while the first holds it, gives up when its context ends, and gets it
// once the first lets go.
func TestLockWaitsForItsHolder(t *testing.T) {
	pair := For(t.TempDir(), "localhost")
	unlock, err := pair.Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := pair.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while held = %v, want the context's end", err)
	}
	unlock()
	again, err := pair.Lock(t.Context())
	if err != nil {
		t.Fatalf("Lock once let go: %v", err)
	}
	again()
	if _, err := For(t.TempDir(), "../x").Lock(t.Context()); err == nil {
		t.Error("Lock made a directory for an invalid host name")
	}
}
