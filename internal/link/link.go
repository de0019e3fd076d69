// Package link is the userspace path that devices dial instead of the
// broker when a run must delay or slow their traffic: a Toxiproxy proxy in
// this process, whose toxics add latency, jitter and rate limits each way.
// The proxy is each device's TCP peer, so a link also turns what happens
// behind it into what a proxy does: an RST from the broker arrives as a
// close, a refused connection as one accepted and then closed, and a
// dropped SYN as a connection that is accepted and then silent. Faults
// that need TCP's own behaviour act in the broker's namespace instead
// (package netfault).
package link

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"

	"github.com/mttrlab/mttr/internal/netfault"
)

// Toxiproxy's toxics write to zerolog's global logger, whatever logger its
// server has: silence it, since a link's logs are no user's business.
func init() { log.Logger = zerolog.Nop() }

// Link forwards every connection to its listener to the upstream address
// through the run's toxics and, while a fault lasts, the fault's.
type Link struct {
	proxy *toxiproxy.Proxy
	addr  string
	mu    sync.Mutex
	fault []string // names of the fault's toxics, while it lasts
}

// Start listens on listen (host:port; port 0 picks one) and forwards to
// upstream through base, the whole run's link. Close it when done.
func Start(listen, upstream string, base netfault.Link) (*Link, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "mttr", listen, upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("link %s → %s: %w", listen, upstream, err)
	}
	l := &Link{proxy: p, addr: p.Listen} // the port it got, once started
	if _, err := l.add("run", base); err != nil {
		p.Stop()
		return nil, err
	}
	return l, nil
}

// Addr is where the link listens, host:port.
func (l *Link) Addr() string { return l.addr }

// Fault adds w's toxics to the link's own until Heal.
func (l *Link) Fault(w netfault.Link) error {
	names, err := l.add("fault", w)
	l.mu.Lock()
	l.fault = append(l.fault, names...)
	l.mu.Unlock()
	return err
}

// Heal removes the fault's toxics; data they hold goes on at once.
func (l *Link) Heal(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.fault) > 0 {
		if err := l.proxy.Toxics.RemoveToxic(ctx, l.fault[0]); err != nil {
			return fmt.Errorf("link: remove toxic %s: %w", l.fault[0], err) // the rest stay listed, for the next Heal
		}
		l.fault = l.fault[1:]
	}
	return nil
}

// Close stops listening and closes every connection.
func (l *Link) Close() { l.proxy.Stop() }

// add adds the toxics of w, each way, named with prefix.
func (l *Link) add(prefix string, w netfault.Link) ([]string, error) {
	type toxic struct {
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		Stream     string         `json:"stream"`
		Toxicity   float32        `json:"toxicity"`
		Attributes map[string]any `json:"attributes"`
	}
	var names []string
	for _, stream := range []string{"upstream", "downstream"} {
		var ts []toxic
		if w.Latency > 0 || w.Jitter > 0 {
			ts = append(ts, toxic{Type: "latency", Attributes: map[string]any{"latency": w.Latency.Milliseconds(), "jitter": w.Jitter.Milliseconds()}})
		}
		if w.Rate > 0 {
			ts = append(ts, toxic{Type: "bandwidth", Attributes: map[string]any{"rate": w.Rate / 1000}}) // kB/s: ParseRate takes whole ones
		}
		for _, t := range ts {
			t.Name, t.Stream, t.Toxicity = prefix+"_"+t.Type+"_"+stream, stream, 1
			b, err := json.Marshal(t)
			if err != nil {
				return names, err
			}
			if _, err := l.proxy.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
				return names, fmt.Errorf("link: add toxic %s: %w", t.Name, err)
			}
			names = append(names, t.Name)
		}
	}
	return names, nil
}
