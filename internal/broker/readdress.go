package broker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// readdressSuffix names a broker's network of its own for the readdress
// fault.
const readdressSuffix = "-readdress"

// ReaddressName is the name of broker container name's readdress network.
func ReaddressName(name string) string { return name + readdressSuffix }

// RoleReaddress is the role label of a readdress network.
const RoleReaddress = "readdress"

// Readdress is a Docker network of a broker's own, where the broker (the
// owner of its network namespace) is given a new address each time it is
// attached again: a broker that comes back elsewhere. The broker stays on
// its first network too, with its published port, for the tool's own
// clients; only the devices reach it here.
type Readdress struct {
	eng    *Engine
	id     string
	name   string
	owner  string // the container that owns the namespace
	subnet netip.Prefix
	addr   netip.Addr // the broker's address here; invalid while detached
	last   netip.Addr // the last address it had
}

// NewReaddress makes broker c's readdress network, labelled with labels,
// and attaches c at its first address. A network of ours of that name
// left by an earlier run is removed first.
func (e *Engine) NewReaddress(ctx context.Context, c *Container, labels map[string]string) (*Readdress, error) {
	name := ReaddressName(c.Name)
	if err := e.RemoveNetwork(ctx, name); err != nil {
		return nil, err
	}
	l := map[string]string{LabelManaged: "true", LabelRole: RoleReaddress}
	for k, v := range labels {
		l[k] = v
	}
	// Addresses of our choosing need a subnet of ours: the engine picks a
	// free one first, and the network is made again with it.
	created, err := e.networkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Labels: l})
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	info, err := e.networkInspect(ctx, created.ID)
	if rerr := e.networkRemove(ctx, created.ID); err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	var subnet netip.Prefix
	for _, cfg := range info.Network.IPAM.Config {
		if cfg.Subnet.Addr().Is4() && cfg.Subnet.Bits() <= 28 {
			subnet = cfg.Subnet.Masked()
			break
		}
	}
	if !subnet.IsValid() {
		return nil, fmt.Errorf("network %s: the engine gave it no IPv4 subnet of 16 addresses or more", name)
	}
	created, err = e.networkCreate(ctx, name, client.NetworkCreateOptions{
		Driver: "bridge", Labels: l,
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}},
	})
	if err != nil {
		return nil, fmt.Errorf("network %s (subnet %s): %w", name, subnet, err)
	}
	r := &Readdress{eng: e, id: created.ID, name: name, owner: c.ID, subnet: subnet}
	if c.HolderID != "" {
		r.owner = c.HolderID
	}
	// The gateway, the host's side, is the subnet's first address.
	r.last = subnet.Addr().Next()
	if _, err := r.Attach(ctx); err != nil {
		r.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return r, nil
}

// Addr is the broker's current address on the network; invalid while it
// is detached.
func (r *Readdress) Addr() netip.Addr { return r.addr }

// next is the address after a in the subnet, past the gateway, wrapping
// round before the broadcast address.
func (r *Readdress) next(a netip.Addr) netip.Addr {
	n := a.Next()
	if !r.subnet.Contains(n.Next()) { // n is the broadcast address (or outside)
		n = r.subnet.Addr().Next().Next()
	}
	return n
}

// Detach takes the broker off the network: its address there is gone, and
// so is every connection to it, silently (no FIN, no RST reaches a peer).
func (r *Readdress) Detach(ctx context.Context) error {
	if err := r.eng.networkDisconnect(ctx, r.id, r.owner); err != nil {
		return fmt.Errorf("readdress: detach from %s: %w", r.name, err)
	}
	r.addr = netip.Addr{}
	return nil
}

// Attach puts the broker back on the network at the address after the one
// it had last, and returns it.
func (r *Readdress) Attach(ctx context.Context) (netip.Addr, error) {
	a := r.next(r.last)
	err := do(ctx, r.eng, "network connect", 0, func(ctx context.Context) (client.NetworkConnectResult, error) {
		return r.eng.cli.NetworkConnect(ctx, r.id, client.NetworkConnectOptions{
			Container:      r.owner,
			EndpointConfig: &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: a}},
		})
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("readdress: attach to %s at %s: %w", r.name, a, err)
	}
	r.addr, r.last = a, a
	return a, nil
}

// Close takes the broker off the network and removes it.
func (r *Readdress) Close(ctx context.Context) error {
	if r.addr.IsValid() {
		if err := r.eng.networkDisconnect(ctx, r.id, r.owner); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("readdress: detach from %s: %w", r.name, err)
		}
		r.addr = netip.Addr{}
	}
	return r.eng.RemoveNetwork(ctx, r.id)
}

// RemoveNetwork removes our network with id or name ref, with every
// container still attached taken off it first. None is no error; one that
// is not ours is refused.
func (e *Engine) RemoveNetwork(ctx context.Context, ref string) error {
	info, err := e.networkInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("network %s: %w", ref, err)
	}
	if info.Network.Labels[LabelManaged] != "true" {
		return fmt.Errorf("network %s exists and was %w (no label %s): refusing to touch it; choose another name with MTTR_CONTAINER", info.Network.Name, ErrNotOurs, LabelManaged)
	}
	for id := range info.Network.Containers {
		if err := e.networkDisconnectForce(ctx, info.Network.ID, id); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("network %s: detach %s: %w", info.Network.Name, id, err)
		}
	}
	if err := e.networkRemove(ctx, info.Network.ID); err != nil && !cerrdefs.IsNotFound(err) && !strings.Contains(err.Error(), "in progress") {
		return fmt.Errorf("remove network %s: %w", info.Network.Name, err)
	}
	return nil
}

// removeOwnNetwork is RemoveNetwork that leaves a network that is not
// ours alone without an error: it is not ours to remove.
func (e *Engine) removeOwnNetwork(ctx context.Context, ref string) error {
	if err := e.RemoveNetwork(ctx, ref); err != nil && !errors.Is(err, ErrNotOurs) {
		return err
	}
	return nil
}

// LeftoverNetworks returns our networks that carry label (any value), as
// Leftovers does for containers.
func (e *Engine) LeftoverNetworks(ctx context.Context, label string) ([]LeftOver, error) {
	list, err := call(ctx, e, "network list", 0, func(ctx context.Context) (client.NetworkListResult, error) {
		return e.cli.NetworkList(ctx, client.NetworkListOptions{
			Filters: make(client.Filters).Add("label", LabelManaged+"=true").Add("label", label),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list leftover networks: %w", err)
	}
	var out []LeftOver
	for _, n := range list.Items {
		out = append(out, LeftOver{ID: n.ID, Name: n.Name, Label: n.Labels[label], Role: n.Labels[LabelRole]})
	}
	return out, nil
}
