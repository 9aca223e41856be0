package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// fakeDNS answers from a map, without sockets: a check can be tested on
// the facts it reads. Names missing from the map do not exist.
type fakeDNS map[string]*dnsAnswer

func (f fakeDNS) Lookup(_ context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	if a, ok := f[dns.TypeToString[qtype]+" "+name]; ok {
		return a, nil
	}
	for key := range f {
		if strings.HasSuffix(key, " "+name) {
			return &dnsAnswer{Kind: kindNoData}, nil
		}
	}
	return &dnsAnswer{Kind: kindNXDomain}, nil
}

// fakeProbes answers probes from a map; unknown addresses refuse.
type fakeProbes map[netip.Addr]probeResult

func (f fakeProbes) Probe(_ context.Context, ip netip.Addr) probeResult {
	if r, ok := f[ip]; ok {
		return r
	}
	return probeResult{Outcome: OutcomeRefused, Detail: "connection refused"}
}

// fakeEngine is an engine whose network is the two fakes; its caches work
// as usual.
func fakeEngine(t testing.TB, resolver resolver, prober prober) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{"192.0.2.53"} // never asked
	// The fakes' hosts use documentation addresses, which are never probed otherwise.
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.resolver.next, e.prober.next = resolver, prober
	return e
}

func TestMXTargetsUnit(t *testing.T) {
	mx := func(hosts ...string) *dnsAnswer {
		a := &dnsAnswer{Kind: kindFound}
		for i, h := range hosts {
			a.MX = append(a.MX, mxHost{Pref: uint16(10 * (i + 1)), Host: h})
		}
		return a
	}
	addr := func(aliases []string, ips ...string) *dnsAnswer {
		a := &dnsAnswer{Kind: kindFound, Aliases: aliases}
		for _, ip := range ips {
			a.Addrs = append(a.Addrs, netip.MustParseAddr(ip))
		}
		return a
	}
	accepts := fakeProbes{netip.MustParseAddr("198.51.100.25"): {Outcome: OutcomeAccept, Code: 220, Greeting: "220 ok"}}
	cases := []struct {
		name   string
		zone   fakeDNS
		status Status
		detail string
	}{
		{"a plain target", fakeDNS{"MX a.example": mx("mx.a.example"), "A mx.a.example": addr(nil, "198.51.100.25")}, StatusPass, "1 MX target"},
		{"a CNAME target", fakeDNS{"MX a.example": mx("alias.a.example"), "A alias.a.example": addr([]string{"mx.a.example"}, "198.51.100.25")},
			StatusWarn, "alias.a.example is a CNAME for mx.a.example"},
		{"an IP literal", fakeDNS{"MX a.example": mx("198.51.100.25")}, StatusFail, "is an IP address"},
		{"private only", fakeDNS{"MX a.example": mx("mx.a.example"), "A mx.a.example": addr(nil, "10.0.0.25")}, StatusFail, "special-purpose"},
		{"one of two gone", fakeDNS{"MX a.example": mx("mx.a.example", "gone.a.example"), "A mx.a.example": addr(nil, "198.51.100.25")},
			StatusWarn, "gone.a.example does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := fakeEngine(t, c.zone, accepts).Evaluate(context.Background(), Request{Domain: "a.example"})
			if got := r.Check(MXTargets); got.Status != c.status || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("mx.targets %s %q, want %s %q", got.Status, got.Detail, c.status, c.detail)
			}
		})
	}
}

func TestClientPTRUnit(t *testing.T) {
	client := netip.MustParseAddr("198.51.100.7")
	zone := fakeDNS{"PTR 7.100.51.198.in-addr.arpa": {Kind: kindFound, Names: []string{"mail.a.example"}}}
	r := fakeEngine(t, zone, fakeProbes{}).Evaluate(context.Background(), Request{ClientIP: client, HELO: "mail.a.example"})
	if got := r.Check(ClientPTR); got.Status != StatusPass || got.Host != "mail.a.example" {
		t.Errorf("client.ptr %s %s", got.Status, got.Detail)
	}
	if got := r.Check(ClientFCrDNS); got.Status != StatusFail || got.Enhanced != "7.25" {
		t.Errorf("client.fcrdns %s %q %s: the name has no A record", got.Status, got.Enhanced, got.Detail)
	}
}
