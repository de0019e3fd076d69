//go:build unix && !linux

package magerun

import "os"

// watchCommand does nothing: only Linux has the parent-death signal.
func watchCommand() {}

// pinned is f's name: without /proc, a binary is executed by its name.
func pinned(f *os.File) string { return f.Name() }
