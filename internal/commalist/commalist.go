// Package commalist reads the comma-separated lists of the settings and
// arguments ("stop,kill", "latency=200ms,loss=1%", "7,release-1.4"), with
// one rule for all of them: members are trimmed, and an empty member or
// one named twice is an error that names it. Callers name the input.
package commalist

import (
	"fmt"
	"strings"
)

// Split returns the members of s. An empty s is no members.
func Split(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
			return nil, fmt.Errorf("member %d of %d is empty", i+1, len(parts))
		case contains(out, p):
			return nil, fmt.Errorf("%q named twice", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// Pair is one key=value member.
type Pair struct{ Key, Value string }

// Pairs returns the key=value members of s, each key once.
func Pairs(s string) ([]Pair, error) {
	members, err := Split(s)
	if err != nil {
		return nil, err
	}
	out := make([]Pair, 0, len(members))
	for _, m := range members {
		k, v, ok := strings.Cut(m, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || k == "":
			return nil, fmt.Errorf("%q: want key=value", m)
		case v == "":
			return nil, fmt.Errorf("%q: no value", m)
		}
		for _, p := range out {
			if p.Key == k {
				return nil, fmt.Errorf("key %q given twice", k)
			}
		}
		out = append(out, Pair{k, v})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
