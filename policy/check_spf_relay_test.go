package policy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/smtptest"
)

// spfEngine is an engine whose one outbound address is ip, greeting as
// helo, resolving through server.
func spfEngine(t *testing.T, server, ip, helo string) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	// A dropped query costs Timeout × Attempts; an answer on loopback takes
	// milliseconds, and has two chances.
	cfg.Resolver = ResolverConfig{Servers: []string{server}, Timeout: 500 * time.Millisecond, Attempts: 2}
	addr := netip.MustParseAddr(ip).Unmap()
	cfg.OutboundIPs = []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}
	cfg.EgressHELO = helo
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// spfRelayOf runs spf.relay for req as Evaluate does, and nothing else:
// the zones of these tests have public addresses that must not be probed.
func spfRelayOf(e *Engine, req Request) Result {
	return e.runCheck(context.Background(), newEvaluation(e, req), slices.Index(checks, &spfRelay))
}

func TestSPFRelayAsReceiversSeeIt(t *testing.T) {
	z := smtptest.NewZone()
	z.TXT("empty-label.test", "v=spf1 a:mail.example...com -all").
		TXT("long-label.test", "v=spf1 a:"+strings.Repeat("a", 64)+".example.com -all").
		TXT("spaces.test", "v=spf1 a:macro%%percent%_%_space%-url-space.spaces.test -all").
		MustAdd(`macro%percent\ \ space%20url-space.spaces.test. A 192.0.2.10`).
		TXT("helo.test", "v=spf1 a:%{h} -all").A("relay.example.test", "192.0.2.10").
		TXT("local.test", "v=spf1 exists:%{l}.users.local.test -all").A("alice.users.local.test", "127.0.0.2").
		TXT("quoted.test", "v=spf1 ip4:192.0.2.10 -all")
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cases := []struct {
		name   string
		req    Request
		status Status
		detail string
	}{
		// RFC 7208 sections 4.3 and 5: a target name no query can carry does
		// not exist; it is not a DNS error to try again.
		{"a target name with an empty label", Request{Sender: "a@empty-label.test"}, StatusFail, "192.0.2.10 fail"},
		{"a target name with a label over 63 octets", Request{Sender: "a@long-label.test"}, StatusFail, "192.0.2.10 fail"},
		// Section 7.3: "%_" expands to a space, which DNS carries.
		{"a macro-expanded name with spaces", Request{Sender: "a@spaces.test"}, StatusPass, "192.0.2.10 pass"},
		// Section 7.3: %{h} is the HELO receivers get, this relay's own.
		{"%{h}", Request{Sender: "a@helo.test", HELO: "client.example.test"}, StatusPass, "192.0.2.10 pass"},
		// Section 7.3: %{l} is the envelope sender's local part; section
		// 4.3: postmaster where there is none.
		{"%{l} of the sender", Request{Sender: "<alice@local.test>"}, StatusPass, "192.0.2.10 pass"},
		{"%{l} of another sender", Request{Sender: "<bob@local.test>"}, StatusFail, "192.0.2.10 fail"},
		{"%{l} without a sender", Request{Domain: "local.test"}, StatusFail, "192.0.2.10 fail"},
		{"%{l} of a sender without a local part", Request{Sender: "@local.test"}, StatusFail, "192.0.2.10 fail"},
		// RFC 5321 section 4.1.2: a quoted local part may hold an "@".
		{"a quoted local part with an @", Request{Sender: `<"a@b"@quoted.test>`}, StatusPass, "quoted.test SPF: 192.0.2.10 pass"},
		// domain.syntax fails them: the detail says what receivers do.
		{"a sender domain SPF calls malformed", Request{Sender: "a@mail.example...com"}, StatusSkip, "receivers' SPF gives none"},
		{"an address literal", Request{Sender: "a@[192.0.2.1]"}, StatusSkip, "receivers' SPF gives none"},
		{"a sender domain SPF would evaluate", Request{Sender: "a@bad_domain.test"}, StatusSkip, "domain.syntax"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := spfRelayOf(spfEngine(t, srv.Addr, "192.0.2.10", "relay.example.test"), c.req)
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) {
				t.Errorf("%s %q, want %s %q", r.Status, r.Detail, c.status, c.detail)
			}
		})
	}
}

// A reload that changes outbound.helo changes what %{h} expands to: the
// SPF results of the old name are not kept.
func TestSPFRelayAfterAHELOChange(t *testing.T) {
	z := smtptest.NewZone().TXT("helo.test", "v=spf1 a:%{h} -all").A("relay.example.test", "192.0.2.10").A("other.example.test", "192.0.2.99")
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e := spfEngine(t, srv.Addr, "192.0.2.10", "relay.example.test")
	req := Request{Sender: "a@helo.test"}
	if r := spfRelayOf(e, req); r.Status != StatusPass {
		t.Fatalf("%s %s", r.Status, r.Detail)
	}
	cfg := e.Config()
	cfg.EgressHELO = "other.example.test"
	e2, err := Reconfigure(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r := spfRelayOf(e2, req); r.Status != StatusFail {
		t.Errorf("after the HELO change: %s %s", r.Status, r.Detail)
	}
}
