package broker

import "testing"

// TestPathCanHold guards where the path watch runs: every fault on a plain
// container's path, and only disconnect on a holder's.
func TestPathCanHold(t *testing.T) {
	for _, fault := range []string{FaultStop, FaultKill, FaultRestart, FaultRecreate, FaultPause, FaultDisconnect} {
		if !PathCanHold(NetNSPlain, fault) {
			t.Errorf("plain, %s: the path can hold", fault)
		}
		if got, want := PathCanHold(NetNSHolder, fault), fault == FaultDisconnect; got != want {
			t.Errorf("holder, %s: PathCanHold = %v, want %v", fault, got, want)
		}
	}
}
