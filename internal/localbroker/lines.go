package localbroker

import (
	"bytes"
	"strings"
	"sync"
)

// lastLines keeps the last n lines written to it.
type lastLines struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  []byte
}

func (l *lastLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.add(string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	if len(l.part) > 4096 {
		l.add(string(l.part))
		l.part = l.part[:0]
	}
	return len(p), nil
}

// line adds one whole line.
func (l *lastLines) line(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(string(b))
}

func (l *lastLines) add(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	l.lines = append(l.lines, s)
	if len(l.lines) > l.n {
		l.lines = l.lines[len(l.lines)-l.n:]
	}
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(l.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], strings.TrimSpace(string(l.part)))
	}
	if len(lines) == 0 {
		return "none"
	}
	return strings.Join(lines, " | ")
}
