package commalist

import (
	"slices"
	"strings"
	"testing"
)

// TestSplit guards the one rule of every comma list: members trimmed, and
// an empty or repeated member refused, named.
func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"  ", nil, ""},
		{"stop", []string{"stop"}, ""},
		{" stop , kill ", []string{"stop", "kill"}, ""},
		{"1,,2", nil, "member 2 of 3 is empty"},
		{"1,2,", nil, "member 3 of 3 is empty"},
		{",1", nil, "member 1 of 2 is empty"},
		{"kill,stop,kill", nil, `"kill" named twice`},
	} {
		got, err := Split(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Split(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestPairs guards key=value lists: the same rule, and each key once.
func TestPairs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Pair
		err  string
	}{
		{"latency=10ms", []Pair{{"latency", "10ms"}}, ""},
		{" latency = 10ms , loss=1% ", []Pair{{"latency", "10ms"}, {"loss", "1%"}}, ""},
		{"latency=10ms,latency=20ms", nil, `key "latency" given twice`},
		{"latency", nil, `"latency": want key=value`},
		{"=5", nil, `"=5": want key=value`},
		{"latency=", nil, `"latency=": no value`},
		{"latency=1ms,,loss=1%", nil, "member 2 of 3 is empty"},
	} {
		got, err := Pairs(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Pairs(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Pairs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
