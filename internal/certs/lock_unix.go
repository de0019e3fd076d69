//go:build unix

package certs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock takes an exclusive lock on the pair's directory (made when
// missing), so that processes that find the pair missing at once make it
// once: the first makes it, the others wait and then find it. The lock
// goes with the returned function, or with the process.
func (p Pair) Lock() (unlock func(), err error) {
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil // closing the last descriptor releases the lock
}
