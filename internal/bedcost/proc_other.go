//go:build !linux

package bedcost

import (
	"errors"
	"time"
)

// Host is not known off Linux.
func Host() (time.Duration, error) { return 0, errors.New("host cpu: only read on Linux") }

// Groups is not known off Linux.
func Groups(pgids []int) time.Duration { return 0 }
