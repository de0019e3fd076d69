//go:build !unix

package certs

// Lock does nothing where there are no Unix file locks.
func (p Pair) Lock() (unlock func(), err error) { return func() {}, nil }
