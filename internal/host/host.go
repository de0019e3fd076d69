// Package host reads what MTTR lab needs to know of this machine from its
// operating system: whether a process is alive (a zombie is not), its
// process group, waiting for a child to exit without reaping it, and how
// many open files, local ports and bytes of memory a fleet of devices may
// take. It reads and waits; it never signals anything.
package host

// Process is what /proc/<pid>/stat says of a process.
type Process struct {
	State byte // R, S, D, T, Z, ...
	PPID  int  // its parent
	PGID  int  // its process group
}

// Limits are what bounds a fleet on this machine; zero where unknown.
type Limits struct {
	Files     int   // open files this process may have (RLIMIT_NOFILE)
	Ports     int   // local ports for connections toward one address
	Available int64 // memory available, bytes
}
