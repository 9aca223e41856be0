package config

import (
	"errors"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/policy"
)

// BlocklistZone is one DNS blocklist zone (RFC 5782), written as its name
// alone ("zen.spamhaus.org": the codes that zone is known to use) or as a
// mapping that says which answers mean listed and which refused.
type BlocklistZone struct {
	Zone Domain `yaml:"zone"`
	// Name is what reports, logs and metrics call the zone (a DQS zone's
	// key stays out of them).
	Name    string   `yaml:"name"`
	Listed  []Prefix `yaml:"listed"`
	Refused []Prefix `yaml:"refused"`
}

// fromScalar reads the short form: the zone's name.
func (z *BlocklistZone) fromScalar(n *yaml.Node) error { return z.Zone.UnmarshalYAML(n) }

// check validates the mapping form.
func (z *BlocklistZone) check() error {
	if z.Zone == "" {
		return errors.New("a blocklist needs its zone (zone: ...)")
	}
	for _, r := range z.Name {
		if r <= ' ' || r >= 0x7f || r == '"' || r == '\\' {
			return fmt.Errorf("name %q: want printable ASCII without spaces or quotes (it is a metric label)", z.Name)
		}
	}
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for key, ps := range map[string][]Prefix{"listed": z.Listed, "refused": z.Refused} {
		for _, p := range ps {
			if !p.P.Addr().Is4() || !loopback.Contains(p.P.Addr()) || p.P.Bits() < 8 {
				return fmt.Errorf("%s: %s is not inside 127.0.0.0/8, where every blocklist answer lies (RFC 5782 section 2.1)", key, p.P)
			}
		}
	}
	return nil
}

// uniqueZones refuses a zone listed twice, or two zones of one name: each
// name is one series of mxguard_egress_listed.
func (c *Config) uniqueZones(key string, zones []BlocklistZone) []error {
	var errs []error
	zone, name := map[string]bool{}, map[string]bool{}
	for _, z := range zones {
		n := policy.BlocklistZone{Zone: string(z.Zone), Name: z.Name}.Label()
		switch {
		case zone[string(z.Zone)]:
			errs = append(errs, c.errorAt(key, "%s is listed twice", z.Zone))
		case name[n]:
			errs = append(errs, c.errorAt(key, "two zones are named %s: give one another name (name: ...)", n))
		}
		zone[string(z.Zone)], name[n] = true, true
	}
	return errs
}

func blocklistZones(zs []BlocklistZone) []policy.BlocklistZone {
	if len(zs) == 0 {
		return nil
	}
	out := make([]policy.BlocklistZone, len(zs))
	for i, z := range zs {
		out[i] = policy.BlocklistZone{Zone: string(z.Zone), Name: z.Name, Listed: prefixes(z.Listed), Refused: prefixes(z.Refused)}
	}
	return out
}
