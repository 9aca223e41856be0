package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/policy"
)

func TestBlocklistZones(t *testing.T) {
	c, err := Parse("ok.yaml", []byte(`outbound:
  dnsbl_zones:
    - zen.spamhaus.org
    - zone: s3cr3t.zen.dq.spamhaus.net
    - {zone: list.example, name: example, listed: [127.0.0.2, 127.0.0.8/29], refused: [127.0.0.1]}
checks:
  domain_blocklists: [DBL.Spamhaus.org.]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	e := c.Engine()
	want := []policy.BlocklistZone{
		{Zone: "zen.spamhaus.org"}, {Zone: "s3cr3t.zen.dq.spamhaus.net"},
		{Zone: "list.example", Name: "example", Listed: []netip.Prefix{p("127.0.0.2/32"), p("127.0.0.8/29")}, Refused: []netip.Prefix{p("127.0.0.1/32")}},
	}
	if len(e.DNSBLZones) != len(want) {
		t.Fatalf("zones %+v", e.DNSBLZones)
	}
	for i, z := range e.DNSBLZones {
		w := want[i]
		if z.Zone != w.Zone || z.Name != w.Name || len(z.Listed) != len(w.Listed) || len(z.Refused) != len(w.Refused) ||
			len(w.Listed) > 0 && (z.Listed[1] != w.Listed[1] || z.Refused[0] != w.Refused[0]) {
			t.Errorf("zone %d: %+v, want %+v", i, z, w)
		}
	}
	if len(e.DomainBlocklists) != 1 || e.DomainBlocklists[0].Zone != "dbl.spamhaus.org" {
		t.Errorf("domain blocklists %+v", e.DomainBlocklists)
	}
	if d := Default().Engine(); d.DNSBLZones != nil || d.DomainBlocklists != nil {
		t.Errorf("a zone by default: %+v %+v", d.DNSBLZones, d.DomainBlocklists)
	}
}

// A mistake in a blocklist entry is an error at its line, like any other key's.
func TestBlocklistZoneMistakes(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"outbound:\n  dnsbl_zones:\n    - zone: zen.spamhaus.org\n      listd: [127.0.0.2]\n",
			`bad.yaml:4: unknown key "listd" in outbound.dnsbl_zones (did you mean "listed"?`},
		{"checks:\n  domain_blocklist: [dbl.spamhaus.org]\n", `bad.yaml:2: unknown key "domain_blocklist" in checks (did you mean "domain_blocklists"?`},
		{"outbound:\n  dnsbl_zone: [zen.spamhaus.org]\n", `bad.yaml:2: unknown key "dnsbl_zone" in outbound (did you mean "dnsbl_zones"?`},
		{"outbound:\n  dnsbl_zones: zen.spamhaus.org\n", `bad.yaml:2: outbound.dnsbl_zones: want a list`},
		{"outbound:\n  dnsbl_zones:\n    - [zen.spamhaus.org]\n", `bad.yaml:3: outbound.dnsbl_zones: want a name or a mapping, got a list`},
		{"outbound:\n  dnsbl_zones:\n    - zen_spamhaus.org\n", `bad.yaml:3: outbound.dnsbl_zones: "zen_spamhaus.org" is not a valid domain name`},
		{"outbound:\n  dnsbl_zones:\n    -\n", `bad.yaml:3: outbound.dnsbl_zones: want a name or a mapping, got nothing`},
		{"outbound:\n  dnsbl_zones:\n    - name: zen\n", `bad.yaml:3: outbound.dnsbl_zones: a blocklist needs its zone`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, listed: [10.0.0.2]}\n", `bad.yaml:3: outbound.dnsbl_zones: listed: 10.0.0.2/32 is not inside 127.0.0.0/8`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, refused: [\"::1\"]}\n", `refused: ::1/128 is not inside 127.0.0.0/8`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, refused: [127.0.0.0/4]}\n", `has host bits set`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, listed: 127.0.0.2}\n", `bad.yaml:3: outbound.dnsbl_zones.listed: want a list`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, name: \"x y\"}\n", `name "x y": want printable ASCII without spaces`},
		{"outbound:\n  dnsbl_zones:\n    - {zone: x.example, zone: y.example}\n", `bad.yaml:3: outbound.dnsbl_zones.zone is set twice`},
		{"checks:\n  domain_blocklists:\n    - dbl.spamhaus.org\n    - dbl.spamhaus.org\n", `bad.yaml:2: checks.domain_blocklists: dbl.spamhaus.org is listed twice`},
		{"checks:\n  domain_blocklists: [a.dbl.dq.spamhaus.net, b.dbl.dq.spamhaus.net]\n",
			`checks.domain_blocklists: two zones are named dbl.dq.spamhaus.net: give one another name`},
	} {
		_, err := Parse("bad.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.yaml, err, c.want)
		}
	}
}
