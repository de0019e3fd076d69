//go:build unix

package certs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Lock takes an exclusive lock on the pair's directory (made when
// missing), so that processes that find the pair missing at once make it
// once: the first makes it, the others wait and then find it. It waits
// until ctx ends. The lock goes with the returned function, or with the
// process.
func (p Pair) Lock(ctx context.Context) (unlock func(), err error) {
	if err := ValidateHost(p.Host); err != nil { // before a directory is named after it
		return nil, err
	}
	dir := filepath.Dir(p.CertPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the last descriptor releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		t := time.NewTimer(10 * time.Millisecond) // another process makes the pair: milliseconds
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: another process holds it: %w", dir, context.Cause(ctx))
		case <-t.C:
		}
	}
}
