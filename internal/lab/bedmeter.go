package lab

import (
	"context"
	"time"

	"github.com/mttrlab/mttr/internal/bedcost"
	"github.com/mttrlab/mttr/internal/mttr"
)

// bedMeter measures the test bed's cost in each cycle's window: this
// process, the broker, the external clients' process groups, the host,
// and how late this process woke.
type bedMeter struct {
	probe   *bedcost.Probe
	broker  func(ctx context.Context) (started time.Time, used time.Duration, ok bool)
	clients func() []int // their process groups; nil without external clients
}

// brokerReadTimeout bounds one reading of the broker's CPU.
const brokerReadTimeout = 5 * time.Second

func (m bedMeter) Begin(ctx context.Context) func(context.Context) mttr.BedCost {
	start, tool0, clients0 := time.Now(), bedcost.Self(), m.groups()
	host0, hostErr := bedcost.Host()
	started0, broker0, brokerOK := m.readBroker(ctx)
	m.probe.Take()
	return func(ctx context.Context) mttr.BedCost {
		c := mttr.BedCost{
			Window: time.Since(start), Tool: bedcost.Self() - tool0, Clients: max(m.groups()-clients0, 0),
			Cores: bedcost.Cores(), Late: m.probe.Take(), Broker: -1,
		}
		if host1, err := bedcost.Host(); err == nil && hostErr == nil {
			c.Host = host1 - host0
		}
		started1, broker1, ok := m.readBroker(ctx)
		switch {
		case !ok || !brokerOK:
		case started1.Equal(started0): // the same broker throughout
			c.Broker = max(broker1-broker0, 0)
		case started1.After(start): // restarted in the window: counted from its start
			c.Broker = broker1
		}
		return c
	}
}

func (m bedMeter) groups() time.Duration {
	if m.clients == nil {
		return 0
	}
	return bedcost.Groups(m.clients())
}

// readBroker reads the broker's CPU even when the run was interrupted: the
// cycle's row is stored either way.
func (m bedMeter) readBroker(ctx context.Context) (time.Time, time.Duration, bool) {
	if m.broker == nil {
		return time.Time{}, 0, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerReadTimeout)
	defer cancel()
	return m.broker(ctx)
}
