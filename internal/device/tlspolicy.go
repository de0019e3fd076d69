package device

import (
	"crypto/tls"
	"fmt"
	"github.com/mttrlab/mttr/internal/commalist"
	"slices"
	"strings"
)

// TLSPolicy is how a device uses TLS beyond verifying the broker: whether
// it resumes its session when it reconnects, and which key-exchange groups
// it offers. Both change what a reconnect costs (a full handshake or an
// abbreviated one; a hybrid post-quantum key share or a classic one), so
// they are the client's policy, recorded with the run.
type TLSPolicy struct {
	Resume bool          // offer the session ticket of the last connection
	Groups []tls.CurveID // in order of preference; empty: Go's default
}

// groupNames are the key-exchange groups Go offers, by the names the
// settings use.
var groupNames = []struct {
	name string
	id   tls.CurveID
}{
	{"X25519MLKEM768", tls.X25519MLKEM768},
	{"SecP256r1MLKEM768", tls.SecP256r1MLKEM768},
	{"SecP384r1MLKEM1024", tls.SecP384r1MLKEM1024},
	{"X25519", tls.X25519},
	{"P-256", tls.CurveP256},
	{"P-384", tls.CurveP384},
	{"P-521", tls.CurveP521},
}

// ParseGroups reads a comma-separated list of group names ("X25519,P-256");
// an empty string is Go's default list. A name it does not know, an empty
// member or a repeated name is an error.
func ParseGroups(s string) ([]tls.CurveID, error) {
	names, err := commalist.Split(s)
	if err != nil {
		return nil, err
	}
	var out []tls.CurveID
	for _, name := range names {
		i := slices.IndexFunc(groupNames, func(g struct {
			name string
			id   tls.CurveID
		}) bool {
			return strings.EqualFold(g.name, name)
		})
		switch {
		case i < 0:
			return nil, fmt.Errorf("unknown group %q (known: %s)", name, knownGroups())
		case slices.Contains(out, groupNames[i].id):
			return nil, fmt.Errorf("group %s named twice", groupNames[i].name)
		}
		out = append(out, groupNames[i].id)
	}
	return out, nil
}

func knownGroups() string {
	names := make([]string, len(groupNames))
	for i, g := range groupNames {
		names[i] = g.name
	}
	return strings.Join(names, ", ")
}

// FormatGroups is the settings' form of groups; empty for Go's default.
func FormatGroups(groups []tls.CurveID) string {
	names := make([]string, len(groups))
	for i, id := range groups {
		names[i] = id.String()
		for _, g := range groupNames {
			if g.id == id {
				names[i] = g.name
			}
		}
	}
	return strings.Join(names, ",")
}

// Apply returns the configuration of one device under p: base itself
// under the default policy (devices share it, as they did without one),
// else a copy with the groups it offers and, when it resumes, a session
// cache of its own (a device never resumes another's session).
func (p TLSPolicy) Apply(base *tls.Config) *tls.Config {
	if base == nil || (!p.Resume && len(p.Groups) == 0) {
		return base
	}
	c := base.Clone()
	if len(p.Groups) > 0 {
		c.CurvePreferences = slices.Clone(p.Groups)
	}
	c.ClientSessionCache = nil
	if p.Resume {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	return c
}
