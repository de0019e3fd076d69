package mttr

import "testing"

// TestCompleted guards how an interrupted run counts its cycles: those
// whose rows all count are completed; the one the interrupt stopped is cut
// short whether its fault had begun (its rows are stored, marked) or not
// (nothing of it is); a run that ran them all cut none short.
func TestCompleted(t *testing.T) {
	done := []Cycle{{Cycle: 1, Device: "d", ReadyAt: 1}}
	cut := []Cycle{{Cycle: 2, Device: "d", Interrupted: true}}
	for _, tc := range []struct {
		name              string
		cycles            [][]Cycle
		planned           int
		completed, cutOff int
	}{
		{"in its fault", [][]Cycle{done, cut}, 3, 1, 1},
		{"in its up time", [][]Cycle{done}, 3, 1, 1},
		{"all ran", [][]Cycle{done, done}, 2, 2, 0},
		{"before the first", nil, 3, 0, 1},
	} {
		var s Summary
		for _, rows := range tc.cycles {
			s.add(rows)
		}
		if c, k := s.Completed(tc.planned); c != tc.completed || k != tc.cutOff {
			t.Errorf("%s: Completed(%d) = %d, %d; want %d, %d", tc.name, tc.planned, c, k, tc.completed, tc.cutOff)
		}
	}
}
