package policy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/smtptest"
)

// blocklistEngine is an engine resolving through server that asks zones
// about sender domains (checks.domain_blocklists) and about its outbound
// addresses ips (outbound.dnsbl_zones).
func blocklistEngine(t *testing.T, server string, domainZones, ipZones []BlocklistZone, ips ...string) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	// A dropped query costs Timeout × Attempts.
	cfg.Resolver = ResolverConfig{Servers: []string{server}, Timeout: 300 * time.Millisecond, Attempts: 2}
	cfg.DomainBlocklists, cfg.DNSBLZones = domainZones, ipZones
	for _, s := range ips {
		ip := netip.MustParseAddr(s)
		cfg.OutboundIPs = append(cfg.OutboundIPs, netip.PrefixFrom(ip, ip.BitLen()))
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func startZone(t *testing.T, z *smtptest.Zone) *smtptest.DNSServer {
	t.Helper()
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// domainBlocklistOf runs domain.blocklist for req as Evaluate does, and
// nothing else.
func domainBlocklistOf(e *Engine, req Request) Result {
	return e.runCheck(context.Background(), newEvaluation(e, req), slices.Index(checks, &domainBlocklist))
}

func TestDomainBlocklist(t *testing.T) {
	z := smtptest.NewZone()
	z.List("dbl.spamhaus.org", "spam.test", "127.0.1.2", "https://www.spamhaus.org/query/domain/spam.test").
		List("dbl.spamhaus.org", "public-resolver.test", "127.255.255.254", "").
		List("dbl.spamhaus.org", "over-quota.test", "127.255.255.255", "").
		List("dbl.spamhaus.org", "ip-in-dbl.test", "127.0.1.255", "").
		List("s3cr3tkey.dbl.dq.spamhaus.net", "spam.test", "127.0.1.2", "listed, see s3cr3tkey.dbl.dq.spamhaus.net").
		List("multi.surbl.org", "blocked.test", "127.0.0.1", "").
		List("multi.surbl.org", "phish.test", "127.0.0.8", "phishing").
		List("rhsbl.test", "outside.test", "10.0.0.2", "").
		ListEverything("wild.test", "127.0.0.2").
		SetFault(smtptest.ListedName("rhsbl.test", "servfail.test"), smtptest.ServFail).
		SetFault(smtptest.ListedName("rhsbl.test", "timeout.test"), smtptest.Drop)
	srv := startZone(t, z)
	zones := func(names ...string) []BlocklistZone {
		var zs []BlocklistZone
		for _, n := range names {
			zs = append(zs, BlocklistZone{Zone: n})
		}
		return zs
	}
	cases := []struct {
		name   string
		zones  []BlocklistZone
		sender string
		status Status
		detail string
	}{
		{"not listed", zones("dbl.spamhaus.org", "rhsbl.test"), "a@clean.test", StatusPass, "clean.test is not listed in dbl.spamhaus.org; not listed in rhsbl.test"},
		{"listed, with the TXT reason", zones("dbl.spamhaus.org"), "a@spam.test", StatusFail,
			"spam.test is listed in dbl.spamhaus.org (127.0.1.2: https://www.spamhaus.org/query/domain/spam.test)"},
		{"the organizational domain is listed", zones("dbl.spamhaus.org"), "a@mail.spam.test", StatusFail, "spam.test is listed in dbl.spamhaus.org"},
		{"Spamhaus refuses a public resolver", zones("dbl.spamhaus.org"), "a@public-resolver.test", StatusTempError,
			"query refused (127.255.255.254: query through a public or open resolver): use your own resolver (not a public one), or a Spamhaus DQS key"},
		{"Spamhaus over quota", zones("dbl.spamhaus.org"), "a@over-quota.test", StatusTempError, "127.255.255.255: too many queries"},
		{"an IP address queried in the DBL", zones("dbl.spamhaus.org"), "a@ip-in-dbl.test", StatusTempError, "127.0.1.255: an IP address queried in a domain list"},
		{"SURBL blocks the resolver", zones("multi.surbl.org"), "a@blocked.test", StatusTempError, "query refused (127.0.0.1): use your own resolver"},
		{"SURBL lists by bitmask", zones("multi.surbl.org"), "a@phish.test", StatusFail, "listed in multi.surbl.org (127.0.0.8: phishing)"},
		{"a DQS key stays out of the report", zones("s3cr3tkey.dbl.dq.spamhaus.net"), "a@spam.test", StatusFail,
			"spam.test is listed in dbl.dq.spamhaus.net (127.0.1.2: listed, see dbl.dq.spamhaus.net)"},
		{"a zone's own listed codes", []BlocklistZone{{Zone: "dbl.spamhaus.org", Listed: []netip.Prefix{netip.MustParsePrefix("127.0.1.3/32")}}},
			"a@spam.test", StatusPass, "answered 127.0.1.2, not a listing code of this zone"},
		{"an answer outside 127.0.0.0/8 is no listing", zones("rhsbl.test"), "a@outside.test", StatusTempError, "answered 10.0.0.2, outside 127.0.0.0/8"},
		{"a zone that lists everything is broken", zones("wild.test"), "a@clean.test", StatusTempError,
			"wild.test: broken: it lists INVALID, which no list may list (RFC 5782 section 5)"},
		{"a listing beside a broken zone", zones("wild.test", "dbl.spamhaus.org"), "a@spam.test", StatusFail, "listed in dbl.spamhaus.org"},
		{"SERVFAIL", zones("rhsbl.test"), "a@servfail.test", StatusTempError, "SERVFAIL"},
		{"timeout", zones("rhsbl.test"), "a@timeout.test", StatusTempError, "timeout"},
		{"a name too long to look up is not listed", zones("rhsbl.test"), "a@" + strings.Repeat("a.", 120) + "test", StatusPass, "too long"},
		{"no zone", nil, "a@spam.test", StatusSkip, "checks.domain_blocklists names no zone"},
		{"null sender", zones("rhsbl.test"), "<>", StatusSkip, "null sender"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := blocklistEngine(t, srv.Addr, c.zones, nil)
			r := domainBlocklistOf(e, Request{Sender: c.sender})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) {
				t.Errorf("%s %q, want %s containing %q", r.Status, r.Detail, c.status, c.detail)
			}
			if strings.Contains(r.Detail+r.Fix(), "s3cr3tkey") {
				t.Errorf("the DQS key is in %q / %q", r.Detail, r.Fix())
			}
			if r.Status == StatusFail && !strings.Contains(r.Fix(), "delist") {
				t.Errorf("fix %q", r.Fix())
			}
		})
	}
}

// A hostile list's TXT reason reaches reports printable and bounded.
func TestDomainBlocklistReasonIsPrintable(t *testing.T) {
	z := smtptest.NewZone()
	z.List("rhsbl.test", "spam.test", "127.0.0.2", strings.Repeat("\x00\x1b[31m\xff\n", 1000))
	e := blocklistEngine(t, startZone(t, z).Addr, []BlocklistZone{{Zone: "rhsbl.test"}}, nil)
	r := domainBlocklistOf(e, Request{Sender: "a@spam.test"})
	if r.Status != StatusFail || len(r.Detail) > 300 || r.Detail != Printable(r.Detail, 1000) {
		t.Errorf("%s, %d octets: %q", r.Status, len(r.Detail), r.Detail)
	}
}

// The test entry that shows a zone lists everything is asked once, not
// per message; a subject not listed never needs it.
func TestBlocklistTestEntryIsCached(t *testing.T) {
	z := smtptest.NewZone()
	z.List("rhsbl.test", "spam.test", "127.0.0.2", "spam")
	srv := startZone(t, z)
	e := blocklistEngine(t, srv.Addr, []BlocklistZone{{Zone: "rhsbl.test"}}, nil)
	for range 20 {
		if r := e.Evaluate(context.Background(), Request{Domain: "spam.test"}).Check(DomainBlocklist); r.Status != StatusFail {
			t.Fatalf("%s %s", r.Status, r.Detail)
		}
		e.Evaluate(context.Background(), Request{Domain: "clean.test"})
	}
	if n := srv.QueryCount("invalid.rhsbl.test", dns.TypeA); n != 1 {
		t.Errorf("the test entry was asked %d times", n)
	}
	if n := srv.QueryCount("spam.test.rhsbl.test", dns.TypeA); n != 1 {
		t.Errorf("the listing was asked %d times", n)
	}
}
