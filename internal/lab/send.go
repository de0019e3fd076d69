package lab

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/link"
	"github.com/mttrlab/mttr/internal/netfault"
	"github.com/mttrlab/mttr/internal/stats"
)

// SendSummary is what a Send session achieved.
type SendSummary struct {
	Sent, Acked int
	Latencies   []time.Duration // of acknowledged messages, in send order
}

// Send connects one device to the running broker and publishes telemetry
// every MTTR_SEND_INTERVAL until ctx ends (Ctrl-C, SIGTERM: see Do),
// printing each message's latency and a summary at the end. Messages still
// unacknowledged at the end count as sent, not acknowledged.
func (l *Lab) Send(ctx context.Context) (SendSummary, error) {
	var sum SendSummary
	id, err := device.ParseConnectionString(l.Config.ConnectionString)
	if err != nil {
		return sum, fmt.Errorf("MTTR_CONNECTION_STRING: %w", err)
	}
	tlsConf, err := l.tlsConfig()
	if err != nil {
		return sum, err
	}
	// A link delays or slows the device's path as it would in a run.
	addr, via := l.Config.BrokerAddr, ""
	if lk := l.Config.Link; lk != (netfault.Link{}) {
		if lk.Loss > 0 {
			return sum, fmt.Errorf("MTTR_LINK=%s: loss acts in the broker's network namespace, which only mage mttr sets up; mage send takes latency, jitter and rate", lk)
		}
		path, err := link.Start("127.0.0.1:0", addr, lk)
		if err != nil {
			return sum, err
		}
		defer path.Close()
		via = fmt.Sprintf(" through the link %s (%s)", path.Addr(), lk)
		l2 := *l
		l2.Config.BrokerAddr = path.Addr()
		l = &l2
	}
	cfg := l.deviceConfig(id, id.DeviceID, tlsConf)
	cfg.QoS = 1
	dev, err := device.New(cfg)
	if err != nil {
		return sum, err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timings.ConnectTimeout)
	err = dev.Connect(cctx)
	cancel()
	if err != nil {
		return sum, err
	}
	defer dev.Close()
	l.printf("device %s connected to %s%s (TLS name %s, keep-alive %s); a message every %s with QoS 1; Ctrl-C stops\n",
		dev.ID(), addr, via, l.Config.Host, l.Config.KeepAlive, l.Config.SendInterval)

	type result struct {
		msg device.Message
		err error
	}
	results := make(chan result)
	var wg sync.WaitGroup
	publish := func() {
		sum.Sent++
		wg.Go(func() {
			m, err := dev.Publish(ctx)
			results <- result{m, err}
		})
	}

	tick := time.NewTicker(l.Config.SendInterval)
	defer tick.Stop()
	publish()
	done := ctx.Done()
	for {
		select {
		case <-done:
			done = nil // no more sends; drain the results of messages in flight
			go func() { wg.Wait(); close(results) }()
		case <-tick.C:
			if done != nil {
				publish()
			}
		case ev := <-dev.Events():
			l.printf("%s %s%s\n", ev.At.Format("15:04:05.000"), ev.Kind, errText(ev.Err))
		case r, ok := <-results:
			if !ok {
				l.printSummary(sum)
				return sum, nil
			}
			if r.err != nil {
				if ctx.Err() == nil {
					l.printf("message %d failed: %v\n", r.msg.Seq, r.err)
				}
				continue
			}
			sum.Acked++
			sum.Latencies = append(sum.Latencies, r.msg.Latency)
			l.printf("%s message %d acknowledged in %s\n", r.msg.SentAt.Format("15:04:05.000"), r.msg.Seq, fmtMs(r.msg.Latency))
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func (l *Lab) printSummary(s SendSummary) {
	l.printf("\nsent %d, acknowledged %d", s.Sent, s.Acked)
	if len(s.Latencies) > 0 {
		m := stats.Summarize(stats.Millis(s.Latencies))
		l.printf("; latency min %.1f ms, median %.1f ms, max %.1f ms", m.Min, m.Median, m.Max)
	}
	l.printf("\n")
}
