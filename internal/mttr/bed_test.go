package mttr

import (
	"slices"
	"testing"
	"time"
)

// TestBedBound guards the bed-bound rule: a measured window whose host was
// busy at or over the limit's share of all its cores, or whose timestamps
// were at least the limit late, is bound, with one reason for each; an
// unmeasured window never is.
func TestBedBound(t *testing.T) {
	lim := BedLimits{HostBusy: 0.9, Late: 20 * time.Millisecond}
	w := 10 * time.Second
	for _, tc := range []struct {
		name string
		b    BedCost
		want []string
	}{
		{"not measured", BedCost{Host: time.Hour, Cores: 2, Late: time.Second}, nil},
		{"quiet", BedCost{Window: w, Host: 2 * time.Second, Cores: 2, Late: 2 * time.Millisecond}, nil},
		{"host just under", BedCost{Window: w, Host: 17_999 * time.Millisecond, Cores: 2}, nil},
		{"host at the limit", BedCost{Window: w, Host: 18 * time.Second, Cores: 2}, []string{"host 90 % busy (limit 90 %)"}},
		{"one core of two busy", BedCost{Window: w, Host: 10 * time.Second, Cores: 2}, nil},
		{"late", BedCost{Window: w, Cores: 2, Late: 20 * time.Millisecond}, []string{"timestamps up to 20 ms late (limit 20 ms)"}},
		{"both", BedCost{Window: w, Host: 20 * time.Second, Cores: 2, Late: 45 * time.Millisecond},
			[]string{"host 100 % busy (limit 90 %)", "timestamps up to 45 ms late (limit 20 ms)"}},
	} {
		if got := tc.b.Bound(lim); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Bound = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestBedCostLine guards the one-line form of the bed's cost, and that a
// sum keeps an unread broker unread and the worst lateness.
func TestBedCostLine(t *testing.T) {
	a := BedCost{Window: 4 * time.Second, Tool: 16 * time.Millisecond, Broker: 44 * time.Millisecond, Clients: 120 * time.Millisecond,
		Host: 480 * time.Millisecond, Cores: 2, Late: 1200 * time.Microsecond}
	if got, want := a.String(), "tool 0.4 % of a core, broker 1.1 %, clients 3.0 %, host 6 % of 2 cores; timestamps within 1 ms"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	b := BedCost{Window: 4 * time.Second, Broker: -1, Cores: 2, Late: 7 * time.Millisecond}
	sum := a.Add(b)
	if sum.Window != 8*time.Second || sum.Broker != -1 || sum.Late != 7*time.Millisecond || sum.Tool != a.Tool {
		t.Errorf("Add = %+v", sum)
	}
	if got, want := sum.String(), "tool 0.2 % of a core, clients 1.5 %, host 3 % of 2 cores; timestamps within 7 ms"; got != want {
		t.Errorf("sum String = %q, want %q", got, want)
	}
	if got := (BedCost{}).String(); got != "not measured" {
		t.Errorf("zero String = %q", got)
	}
}
