package policy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/smtptest"
)

// The self-check looks every outbound address up, IPv4 by reversed octets
// and IPv6 by reversed nibbles (RFC 5782 sections 2.1 and 2.4), and reads
// every kind of answer as a list means it.
func TestEgressDNSBL(t *testing.T) {
	z := smtptest.NewZone()
	zen := "zen.spamhaus.org"
	z.List(zen, "192.0.2.10", "127.0.0.2", "https://check.spamhaus.org/sbl/listings/?searchterm=192.0.2.10").
		List(zen, "2001:db8::10", "127.0.0.3", "listed v6").
		List(zen, "192.0.2.12", "127.255.255.254", "").
		List(zen, "2001:db8::12", "127.255.255.252", "").
		SetFault(smtptest.ListedName(zen, "192.0.2.13"), smtptest.ServFail).
		SetFault(smtptest.ListedName(zen, "2001:db8::13"), smtptest.ServFail).
		SetFault(smtptest.ListedName(zen, "192.0.2.14"), smtptest.Drop).
		SetFault(smtptest.ListedName(zen, "2001:db8::14"), smtptest.Drop).
		ListEverything("all.test", "127.0.0.2")
	srv := startZone(t, z)
	want := map[string]struct {
		status Status
		detail string
	}{
		"192.0.2.10":   {StatusFail, "192.0.2.10 is listed in zen.spamhaus.org (127.0.0.2: https://check.spamhaus.org/sbl/listings/?searchterm=192.0.2.10)"},
		"2001:db8::10": {StatusFail, "2001:db8::10 is listed in zen.spamhaus.org (127.0.0.3: listed v6)"},
		"192.0.2.11":   {StatusPass, "192.0.2.11 is not listed in zen.spamhaus.org"},
		"2001:db8::11": {StatusPass, "2001:db8::11 is not listed in zen.spamhaus.org"},
		"192.0.2.12":   {StatusTempError, "zen.spamhaus.org: query refused (127.255.255.254: query through a public or open resolver)"},
		"2001:db8::12": {StatusTempError, "query refused (127.255.255.252: typing error in the zone name)"},
		"192.0.2.13":   {StatusTempError, "SERVFAIL"},
		"2001:db8::13": {StatusTempError, "SERVFAIL"},
		"192.0.2.14":   {StatusTempError, "timeout"},
		"2001:db8::14": {StatusTempError, "timeout"},
	}
	var ips []string
	for ip := range want {
		ips = append(ips, ip)
		z.PTR(ip, "relay.example.test").A("relay.example.test", ip) // the host checks pass
	}
	e := blocklistEngine(t, srv.Addr, nil, []BlocklistZone{{Zone: zen}}, ips...)
	reports := e.SelfCheck(context.Background(), "relay.example.test")
	if len(reports) != len(want) {
		t.Fatalf("%d reports", len(reports))
	}
	for _, r := range reports {
		w := want[r.ClientIP.String()]
		got := r.Check(EgressDNSBL)
		if got.Status != w.status || !strings.Contains(got.Detail, w.detail) || got.IP != r.ClientIP {
			t.Errorf("%s: %s %q, want %s containing %q", r.ClientIP, got.Status, got.Detail, w.status, w.detail)
		}
		if len(r.Blocklists) != 1 || r.Blocklists[0].Zone != zen || r.Blocklists[0].Status != w.status {
			t.Errorf("%s: answers %+v", r.ClientIP, r.Blocklists)
		}
		// A listing flags the report, as the host checks do; a temperror does not.
		if r.Verdict() != map[Status]Verdict{StatusFail: Flag}[w.status] || w.status == StatusFail && r.Decision.Cause != len(r.Checks)-1 {
			t.Errorf("%s: verdict %s cause %d: %s", r.ClientIP, r.Verdict(), r.Decision.Cause, r.Findings())
		}
		if w.status == StatusFail && !strings.Contains(got.Fix(), "delist") {
			t.Errorf("%s: fix %q", r.ClientIP, got.Fix())
		}
	}
	// The nibble name, spelt out.
	if n := srv.QueryCount("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org", dns.TypeA); n != 1 {
		t.Errorf("2001:db8::10 asked %d times by its nibbles", n)
	}

	// A zone that lists everything: reported broken, for both families,
	// by the RFC 5782 section 5 test entry of each.
	e = blocklistEngine(t, srv.Addr, nil, []BlocklistZone{{Zone: "all.test"}}, "192.0.2.11", "2001:db8::11")
	for _, r := range e.SelfCheck(context.Background(), "relay.example.test") {
		got := r.Check(EgressDNSBL)
		entry := map[bool]string{true: "127.0.0.1", false: "::ffff:127.0.0.1"}[r.ClientIP.Is4()]
		if got.Status != StatusTempError || !strings.Contains(got.Detail, "broken: it lists "+entry+", which no list may list") {
			t.Errorf("%s: %s %q", r.ClientIP, got.Status, got.Detail)
		}
	}
	if srv.QueryCount("1.0.0.127.all.test", dns.TypeA) != 1 ||
		srv.QueryCount("1.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.all.test", dns.TypeA) != 1 {
		t.Errorf("the test entries were not asked once each")
	}

	// No zone: the self-check says so, and asks nothing.
	e = blocklistEngine(t, srv.Addr, nil, nil, "192.0.2.11")
	if r := e.SelfCheck(context.Background(), "relay.example.test")[0].Check(EgressDNSBL); r.Status != StatusSkip || r.Detail != "outbound.dnsbl_zones names no zone" {
		t.Errorf("%s %q", r.Status, r.Detail)
	}
}

// The codes of the well-known zones, and what a zone's entry overrides.
func TestBlocklistZoneDefaults(t *testing.T) {
	p := netip.MustParsePrefix
	for _, c := range []struct {
		zone        BlocklistZone
		name        string
		listed, ref []netip.Prefix
	}{
		{BlocklistZone{Zone: "zen.spamhaus.org"}, "zen.spamhaus.org", []netip.Prefix{p("127.0.0.0/24")}, []netip.Prefix{p("127.255.255.0/24")}},
		{BlocklistZone{Zone: "KEY.zen.dq.spamhaus.net"}, "zen.dq.spamhaus.net", []netip.Prefix{p("127.0.0.0/24")}, []netip.Prefix{p("127.255.255.0/24")}},
		{BlocklistZone{Zone: "KEY.dbl.dq.spamhaus.net", Name: "dbl"}, "dbl", []netip.Prefix{p("127.0.1.0/24")}, []netip.Prefix{p("127.0.1.255/32"), p("127.255.255.0/24")}},
		{BlocklistZone{Zone: "bl.spamcop.net"}, "bl.spamcop.net", []netip.Prefix{p("127.0.0.2/32")}, nil},
		{BlocklistZone{Zone: "list.example", Refused: []netip.Prefix{p("127.0.0.255/32")}}, "list.example", []netip.Prefix{p("127.0.0.0/8")}, []netip.Prefix{p("127.0.0.255/32")}},
	} {
		z := c.zone.withDefaults()
		if z.Name != c.name || !slices.Equal(z.Listed, c.listed) || !slices.Equal(z.Refused, c.ref) {
			t.Errorf("%s: %+v", c.zone.Zone, z)
		}
	}
}
