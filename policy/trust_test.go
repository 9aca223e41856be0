package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// An MX address that is the client's own is an outbound IP whether or not
// the client authenticated or is allow-listed: only identity.skip_networks
// keeps it out (README, Checks: mx.outbound-ip).
func TestOutboundIPCountsAuthenticatedAndAllowListedClients(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Policy.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.1.3/32")}
	e := newEngine(t, cfg)
	client := netip.MustParseAddr(spectest.IPRefused) // refused.test's only MX address
	for name, req := range map[string]policy.Request{
		"authenticated": {Sender: "a@refused.test", ClientIP: client, AuthUser: "someone"},
		"allow-listed":  {Sender: "a@refused.test", ClientIP: client},
	} {
		r := e.Evaluate(context.Background(), req)
		if c := r.Check(policy.MXOutboundIP); c.ID != policy.MXOutboundIP || c.Status != policy.StatusFail {
			t.Errorf("%s client: %s %s (%s)", name, c.ID, c.Status, c.Detail)
		}
	}
	cfg.SkipIdentityNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	e = newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@refused.test", ClientIP: client})
	if c := r.Check(policy.MXOutboundIP); c.Status != policy.StatusPass {
		t.Errorf("client in identity.skip_networks: mx.outbound-ip %s (%s)", c.Status, c.Detail)
	}
}

// A reload that points mxguard at other resolvers, or changes the TTL
// bounds, must not go on serving what the old settings cached.
func TestReconfigureDropsAnswersOfOtherResolvers(t *testing.T) {
	first, second := spectest.Sandbox(t), spectest.Sandbox(t)
	first.Zone.MX("moved.test", 10, "mx.refused.test")
	second.Zone.MX("moved.test", 10, "mx.accept.test")
	spectest.Passing(first.Zone, "moved.test")
	spectest.Passing(second.Zone, "moved.test")
	req := policy.Request{Sender: "a@moved.test"}

	cfg := spectest.Config(first)
	e := newEngine(t, cfg)
	if v := e.Evaluate(context.Background(), req).Verdict(); v != policy.Defer {
		t.Fatalf("first resolver: %s", v)
	}
	next := spectest.Config(second)
	next.Probe = cfg.Probe // the same probe settings: only the resolver moves
	e2, err := policy.Reconfigure(e, next)
	if err != nil {
		t.Fatal(err)
	}
	if v := e2.Evaluate(context.Background(), req).Verdict(); v != policy.Pass {
		t.Errorf("after moving to the second resolver: %s (its old answer was kept)", v)
	}

	next.Cache.MaxTTL = 2 * time.Minute
	e3, err := policy.Reconfigure(e2, next)
	if err != nil {
		t.Fatal(err)
	}
	if st := e3.DNSCacheStats(); st.Entries != 0 {
		t.Errorf("new TTL bounds kept %d entries cached under the old ones", st.Entries)
	}
}

// A hostile zone makes every answer kilobytes; cache.dns_max_bytes holds
// the cache to its budget whatever the entry count allows.
func TestDNSCacheIsBoundedInBytes(t *testing.T) {
	sb, err := smtptest.NewSandbox()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	long := strings.Repeat("x", 60)
	const domains, targets = 40, 60
	for d := 0; d < domains; d++ {
		for i := 0; i < targets; i++ {
			// About 15 KB of MX answer per domain, over shared targets.
			sb.Zone.MX(fmt.Sprintf("fat%d.test", d), uint16(i), fmt.Sprintf("%s.%s.%s.t%02d.test", long, long, long, i))
		}
	}
	const budgetBytes = 256 << 10
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	unbounded := newEngine(t, cfg) // what the same evaluations cache without the budget
	cfg.Cache.DNSMaxBytes = budgetBytes
	e := newEngine(t, cfg)
	for d := 0; d < domains; d++ {
		unbounded.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("fat%d.test", d)})
		e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("fat%d.test", d)})
		if st := e.DNSCacheStats(); st.Bytes > budgetBytes {
			t.Fatalf("after %d domains the DNS cache holds %d bytes, over its %d", d+1, st.Bytes, budgetBytes)
		}
	}
	st, all := e.DNSCacheStats(), unbounded.DNSCacheStats()
	// The fat MX answers alone are twice the budget: more entries go than
	// there are domains.
	if st.Bytes < budgetBytes/2 || all.Bytes < 2*budgetBytes || all.Entries-st.Entries <= domains {
		t.Errorf("%d entries, %d bytes (%d, %d unbounded): the budget was not used, or nothing was evicted", st.Entries, st.Bytes, all.Entries, all.Bytes)
	}
	// What is cached is still served: the newest domain is warm.
	queries := sb.DNS.Queries()
	e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("fat%d.test", domains-1)})
	if q := sb.DNS.Queries() - queries; q != 0 {
		t.Errorf("the newest domain made %d queries", q)
	}
	// Oldest first: the first domain's MX answer is gone.
	asked := sb.DNS.QueryCount("fat0.test", dns.TypeMX)
	e.Evaluate(context.Background(), policy.Request{Domain: "fat0.test"})
	if sb.DNS.QueryCount("fat0.test", dns.TypeMX) == asked {
		t.Error("the first domain's MX answer was still cached")
	}
}

// The fix text names the port that was probed, not a fixed 25.
func TestFixTextNamesTheProbedPort(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@refused.test"})
	reply, ok := r.Reply()
	want := fmt.Sprintf("accept SMTP on port %d", sb.Port)
	if !ok || !strings.Contains(reply.Text, want) || strings.Contains(reply.Text, "port 25 ") {
		t.Errorf("reply %q does not name port %d", reply.Text, sb.Port)
	}
}

// Details, hold reasons and replies are ASCII: an MTA passes them on as
// they are, and a '?' where a section sign was helps nobody.
func TestDetailsAndRepliesAreASCII(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	for _, c := range spectest.Cases {
		r := e.Evaluate(context.Background(), c.Request())
		texts := []string{r.HeaderValue()}
		for _, ch := range r.Checks {
			texts = append(texts, ch.Detail, ch.Fix())
		}
		if reply, ok := r.Reply(); ok {
			texts = append(texts, reply.String())
			if strings.Contains(reply.Text, "?") {
				t.Errorf("%s: reply %q has a '?' for a character it could not send", c.Name, reply.Text)
			}
		}
		for _, s := range texts {
			for _, ch := range s {
				if ch >= 0x7f || ch < 0x20 {
					t.Errorf("%s: %q is not printable ASCII", c.Name, s)
					break
				}
			}
		}
	}
}

// spf.relay's fix text names the mechanism that would authorize this relay.
func TestSPFFixNamesTheMechanism(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	for domain, want := range map[string]string{
		"spf-partial.test": "Add ip4:127.0.2.2 to the SPF record of spf-partial.test",
		"spf-none.test":    `"v=spf1 ip4:127.0.2.1 ip4:127.0.2.2 ~all"`,
	} {
		if fix := e.Evaluate(context.Background(), policy.Request{Domain: domain}).Check(policy.SPFRelay).Fix(); !strings.Contains(fix, want) {
			t.Errorf("%s: fix %q lacks %q", domain, fix, want)
		}
	}
}
