package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

func newEngine(t testing.TB, cfg policy.Config) *policy.Engine {
	t.Helper()
	e, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEngineCheckTable(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	for _, c := range spectest.Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			r := e.Evaluate(context.Background(), c.Request())
			if got, want := spectest.Findings(r.Checks), c.Expected(); got != want {
				t.Errorf("statuses\n got %s\nwant %s", got, want)
				for _, ch := range r.Checks {
					t.Logf("  %-18s %-9s %s", ch.ID, ch.Status, ch.Detail)
				}
			}
			if r.Verdict().String() != c.Verdict {
				t.Errorf("verdict %s, want %s", r.Verdict(), c.Verdict)
			}
			reply, ok := r.Reply()
			if c.Reply != "" && (!ok || !strings.HasPrefix(reply.String(), c.Reply)) {
				t.Errorf("reply %q (%v), want prefix %q", reply, ok, c.Reply)
			}
			if c.Reply == "" && ok {
				t.Errorf("unexpected reply %q", reply)
			}
			if c.Detail != "" && !strings.Contains(firstFinding(r).Detail, c.Detail) {
				t.Errorf("detail %q does not mention %q", firstFinding(r).Detail, c.Detail)
			}
		})
	}
}

// firstFinding is the cause of the verdict, or else the first non-pass check.
func firstFinding(r *policy.Report) policy.Result {
	if c, ok := r.Cause(); ok {
		return c
	}
	for _, c := range r.Checks {
		if c.Status != policy.StatusPass && c.Status != policy.StatusSkip {
			return c
		}
	}
	return policy.Result{}
}

func TestReplyNamesDomainCheckHostAndFix(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	r := e.Evaluate(context.Background(), policy.Request{Sender: "bounce@refused.test"})
	reply, ok := r.Reply()
	if !ok {
		t.Fatal("no reply for a deferred sender")
	}
	for _, want := range []string{"451 4.7.1 refused.test", "mx.port25", "mx.refused.test", spectest.IPRefused, "Fix: "} {
		if !strings.Contains(reply.String(), want) {
			t.Errorf("reply %q lacks %q", reply, want)
		}
	}
	if got, want := r.HeaderValue(), "defer; domain=refused.test; mx.port25=fail"; got != want {
		t.Errorf("header %q, want %q", got, want)
	}
}

func TestHeaderListsFindings(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@some-refused.test",
		ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "other.good.test"})
	want := "flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn; helo.matches-ptr=warn"
	if got := r.HeaderValue(); got != want {
		t.Errorf("header\n got %q\nwant %q", got, want)
	}
}

func TestPolicyOverridesInEngine(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Policy.Actions[policy.MXPort25] = policy.Hold
	cfg.Policy.OnTempError = policy.Defer
	cfg.Policy.AllowDomains = []string{"outonly.test"}
	e := newEngine(t, cfg)
	ctx := context.Background()
	if v := e.Evaluate(ctx, policy.Request{Sender: "a@refused.test"}).Verdict(); v != policy.Hold {
		t.Errorf("mx.port25: hold gave %s", v)
	}
	r := e.Evaluate(ctx, policy.Request{Sender: "a@servfail.test"})
	reply, ok := r.Reply()
	if r.Verdict() != policy.Defer || !ok || !strings.HasPrefix(reply.String(), "451 4.4.3 ") {
		t.Errorf("on_temperror defer: %s %q", r.Verdict(), reply)
	}
	r = e.Evaluate(ctx, policy.Request{Sender: "a@outonly.test"})
	if r.Verdict() != policy.Pass || r.Check(policy.MXRecords).Status != policy.StatusSkip {
		t.Errorf("allow-listed domain: %s, %s", r.Verdict(), spectest.Findings(r.Checks))
	}
}

func TestSkipIdentityNetworks(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.SkipIdentityNetworks = policy.DefaultConfig().SkipIdentityNetworks
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@ok.test", ClientIP: netip.MustParseAddr("127.0.3.2"), HELO: "localhost"})
	if got := spectest.Findings(r.Checks); got != "helo.syntax=skip client.ptr=skip client.fcrdns=skip helo.matches-ptr=skip" {
		t.Errorf("loopback client: %s", got)
	}
	if !strings.Contains(r.Check(policy.HELOSyntax).Detail, "identity.skip_networks") {
		t.Errorf("skip detail %q", r.Check(policy.HELOSyntax).Detail)
	}
}

func TestWarmCacheMakesNoNetworkCalls(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	servers := map[string]*smtptest.SMTPServer{}
	for _, ip := range []string{"127.0.4.1", "127.0.4.2"} {
		srv, err := sb.Serve(ip, smtptest.Accept)
		if err != nil {
			t.Fatal(err)
		}
		servers[ip] = srv
	}
	sb.Zone.MX("warm.test", 10, "a.warm.test").MX("warm.test", 20, "b.warm.test").
		A("a.warm.test", "127.0.4.1").A("b.warm.test", "127.0.4.2").
		PTR("127.0.4.9", "out.warm.test").A("out.warm.test", "127.0.4.9")
	spectest.Passing(sb.Zone, "warm.test")
	req := policy.Request{Sender: "a@warm.test", ClientIP: netip.MustParseAddr("127.0.4.9"), HELO: "out.warm.test"}
	first := e.Evaluate(context.Background(), req)
	if first.Verdict() != policy.Pass {
		t.Fatalf("cold evaluation: %s %s", first.Verdict(), spectest.Findings(first.Checks))
	}
	queries, conns := sb.DNS.Queries(), servers["127.0.4.1"].Connections()+servers["127.0.4.2"].Connections()
	if queries == 0 || conns != 2 {
		t.Fatalf("cold evaluation made %d queries and %d connections", queries, conns)
	}
	second := e.Evaluate(context.Background(), req)
	if got := sb.DNS.Queries() - queries; got != 0 {
		t.Errorf("warm evaluation made %d DNS queries", got)
	}
	if got := servers["127.0.4.1"].Connections() + servers["127.0.4.2"].Connections() - conns; got != 0 {
		t.Errorf("warm evaluation made %d SMTP connections", got)
	}
	if spectest.Findings(second.Checks) != spectest.Findings(first.Checks) || second.Verdict() != first.Verdict() {
		t.Errorf("warm result differs: %s vs %s", spectest.Findings(second.Checks), spectest.Findings(first.Checks))
	}
}

func TestConcurrentMissesCollapse(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	srv, err := sb.Serve("127.0.5.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("herd.test", 10, "mx.herd.test").A("mx.herd.test", "127.0.5.1")
	spectest.Passing(sb.Zone, "herd.test")
	sb.Zone.SetFault("herd.test", smtptest.Delay(100*time.Millisecond)) // keep the first lookup in flight
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.Evaluate(context.Background(), policy.Request{Sender: "a@herd.test"}); r.Verdict() != policy.Pass {
				t.Errorf("verdict %s", r.Verdict())
			}
		}()
	}
	wg.Wait()
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"herd.test", dns.TypeMX}, {"mx.herd.test", dns.TypeA}, {"mx.herd.test", dns.TypeAAAA}} {
		if n := sb.DNS.QueryCount(q.name, q.qtype); n != 1 {
			t.Errorf("%s/%s queried %d times", q.name, dns.TypeToString[q.qtype], n)
		}
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("MX probed %d times", n)
	}
}

func TestCacheHonoursTTLs(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clock.Now
	advance := clock.Advance
	cfg.Cache.MinTTL, cfg.Cache.MaxTTL = 30*time.Second, time.Hour
	cfg.Cache.NegativeMaxTTL = 10 * time.Minute
	cfg.Cache.Prefetch = false // lifetimes alone, without refreshes ahead of them
	e := newEngine(t, cfg)
	sb.Zone.MustAdd("ttl.test. 120 IN MX 10 mx.accept.test.")
	ctx := context.Background()
	eval := func(sender string) { e.Evaluate(ctx, policy.Request{Sender: sender}) }

	eval("a@ttl.test")
	eval("a@gone.test") // NXDOMAIN, negative TTL 60 s from the SOA minimum
	if n := sb.DNS.QueryCount("ttl.test", dns.TypeMX); n != 1 {
		t.Fatalf("MX queried %d times", n)
	}
	advance(59 * time.Second)
	eval("a@ttl.test")
	eval("a@gone.test")
	if a, b := sb.DNS.QueryCount("ttl.test", dns.TypeMX), sb.DNS.QueryCount("gone.test", dns.TypeMX); a != 1 || b != 1 {
		t.Errorf("within TTL: MX %d, NXDOMAIN %d queries", a, b)
	}
	advance(2 * time.Second) // 61 s: the negative answer expired, the positive one not
	eval("a@ttl.test")
	eval("a@gone.test")
	if a, b := sb.DNS.QueryCount("ttl.test", dns.TypeMX), sb.DNS.QueryCount("gone.test", dns.TypeMX); a != 1 || b != 2 {
		t.Errorf("after 61 s: MX %d, NXDOMAIN %d queries", a, b)
	}
	advance(60 * time.Second) // 121 s
	eval("a@ttl.test")
	if n := sb.DNS.QueryCount("ttl.test", dns.TypeMX); n != 2 {
		t.Errorf("after the TTL: MX queried %d times", n)
	}
	if st := e.DNSCacheStats(); st.Hits == 0 || st.Misses == 0 || st.Entries == 0 {
		t.Errorf("cache stats %+v", st)
	}
}

func TestProbeTTLPerOutcome(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clock.Now
	cfg.Cache.MaxTTL = 24 * time.Hour // keep DNS answers; watch probes only
	cfg.Cache.ProbeAcceptTTL, cfg.Cache.ProbeRefusedTTL, cfg.Cache.ProbeTimeoutTTL = time.Hour, 10*time.Minute, time.Minute
	cfg.Cache.Prefetch = false // lifetimes alone, without refreshes ahead of them
	e := newEngine(t, cfg)
	accept, err := sb.Serve("127.0.6.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	silent, err := sb.Serve("127.0.6.2", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("pa.test", 10, "mx.pa.test").A("mx.pa.test", "127.0.6.1")
	sb.Zone.MX("ps.test", 10, "mx.ps.test").A("mx.ps.test", "127.0.6.2")
	for _, step := range []time.Duration{0, 59 * time.Second, 2 * time.Second, time.Hour} {
		clock.Advance(step)
		e.Evaluate(context.Background(), policy.Request{Sender: "a@pa.test"})
		e.Evaluate(context.Background(), policy.Request{Sender: "a@ps.test"})
	}
	// accept: probed at 0 and again after 1h1m; silent: at 0, 61 s, and 1h1m.
	if a, s := accept.Connections(), silent.Connections(); a != 2 || s != 3 {
		t.Errorf("probes: accepting %d (want 2), silent %d (want 3)", a, s)
	}
}

func TestDeadResolverIsTempError(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Resolver.Servers = []string{"127.0.0.1:1"} // nothing listens there
	cfg.Resolver.Timeout = 200 * time.Millisecond
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@ok.test", ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "mail.good.test"})
	// Every check that reads the sender domain's records could not either.
	want := spectest.Merge("mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip client.ptr=temperror client.fcrdns=skip helo.matches-ptr=skip",
		spectest.EveryFixture(policy.StatusTempError))
	if got := spectest.Findings(r.Checks); got != want {
		t.Errorf("statuses %s, want %s", got, want)
	}
	if r.Verdict() != policy.Pass || !r.Decision.TempError {
		t.Errorf("decision %+v", r.Decision)
	}
}

func TestDecisionDeadline(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	// Far beyond the deadline: an evaluation that waited for the probe could
	// not pass for one that kept its deadline, however loaded the machine.
	cfg.Probe.GreetingTimeout = 20 * time.Second
	e := newEngine(t, cfg)
	silent, err := sb.Serve("127.0.8.2", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("hush.test", 10, "mx.hush.test").A("mx.hush.test", "127.0.8.2")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	r := e.Evaluate(ctx, policy.Request{Sender: "a@hush.test"}) // the probe needs the whole greeting timeout
	if took := time.Since(began); took > cfg.Probe.GreetingTimeout/2 {
		t.Errorf("evaluation took %v past its deadline", took)
	}
	if r.Check(policy.MXPort25).Status != policy.StatusTempError {
		t.Errorf("mx.port25 %s: %s", r.Check(policy.MXPort25).Status, r.Check(policy.MXPort25).Detail)
	}
	// The probe goes on in the background. The server hangs up on it rather
	// than wait out the greeting timeout: only a probe still running sees
	// that, and its result lands in the cache.
	testkit.WaitFor(t, "the probe to connect", func() bool { return silent.Connections() > 0 })
	silent.Close()
	testkit.WaitFor(t, "the probe result to reach the cache", func() bool { return e.ProbeCacheStats().Entries > 0 })
	before := e.ProbeCacheStats()
	r = e.Evaluate(context.Background(), policy.Request{Sender: "a@hush.test"})
	if st := e.ProbeCacheStats(); st.Hits == before.Hits || st.Misses != before.Misses {
		t.Errorf("the abandoned probe did not reach the cache: %+v, then %+v", before, st)
	}
	if c := r.Check(policy.MXPort25); c.Status != policy.StatusFail || !strings.Contains(c.Detail, "closed the connection") {
		t.Errorf("mx.port25 from the cache %s: %s; want the hang-up the probe saw", c.Status, c.Detail)
	}
	if n := silent.Connections(); n != 1 {
		t.Errorf("the MX was probed %d times", n)
	}
}

func TestBlockedEgressSkipsInsteadOfDeferring(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Probe.BlockedAfter = 1
	cfg.Policy.OnTempError = policy.Defer
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@blackhole.test"})
	if c := r.Check(policy.MXPort25); c.Status != policy.StatusSkip || !strings.Contains(c.Detail, "outbound port 25 looks blocked") {
		t.Errorf("mx.port25 %s: %s", c.Status, c.Detail)
	}
	if r.Verdict() != policy.Pass {
		t.Errorf("verdict %s: a blocked port 25 here must not defer mail", r.Verdict())
	}
}

func TestReconfigureKeepsCaches(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	e := newEngine(t, cfg)
	req := policy.Request{Sender: "a@ok.test"}
	e.Evaluate(context.Background(), req)
	queries := sb.DNS.Queries()

	cfg.Policy.Actions[policy.MXPort25] = policy.Reject
	e2, err := policy.Reconfigure(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e2.Evaluate(context.Background(), req)
	if sb.DNS.Queries() != queries {
		t.Errorf("the reconfigured engine asked DNS again (%d queries)", sb.DNS.Queries()-queries)
	}
	cfg.Cache.DNSEntries = 10
	e3, err := policy.Reconfigure(e2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e3.Evaluate(context.Background(), req)
	if sb.DNS.Queries() == queries {
		t.Error("a resized cache kept its old entries")
	}
}

// After the decision deadline the whole chain (MX, then targets, then
// probes) still completes in the background, so the next message finds it
// all in the cache.
func TestBackgroundCompletionAfterDeadline(t *testing.T) {
	sb := spectest.Sandbox(t)
	e := newEngine(t, spectest.Config(sb))
	srv, err := sb.Serve("127.0.8.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("late.test", 10, "mx.late.test").A("mx.late.test", "127.0.8.1").
		SetFault("late.test", smtptest.Delay(150*time.Millisecond))
	spectest.Passing(sb.Zone, "late.test")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if r := e.Evaluate(ctx, policy.Request{Sender: "a@late.test"}); !r.Incomplete {
		t.Fatalf("not cut off by the deadline: %s", spectest.Findings(r.Checks))
	}
	testkit.WaitFor(t, "the MX to be probed after the deadline", func() bool { return srv.Connections() > 0 })
	testkit.WaitFor(t, "the probe result to reach the cache", func() bool { return e.ProbeCacheStats().Entries > 0 })
	// The other chain's last lookup (dmarc.record's) completes in the background too.
	testkit.WaitFor(t, "the DMARC lookup", func() bool { return sb.DNS.QueryCount("_dmarc.late.test", dns.TypeTXT) > 0 })
	queries := sb.DNS.Queries()
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@late.test"})
	if r.Incomplete || r.Verdict() != policy.Pass || sb.DNS.Queries() != queries || srv.Connections() != 1 {
		t.Errorf("second evaluation: %s, %d more queries, %d connections", spectest.Findings(r.Checks), sb.DNS.Queries()-queries, srv.Connections())
	}
}

func TestFailedLookupsAreCachedBriefly(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clock.Now
	cfg.Cache.ErrorTTL = 10 * time.Second
	e := newEngine(t, cfg)
	for i := 0; i < 3; i++ {
		e.Evaluate(context.Background(), policy.Request{Sender: "a@servfail.test"})
	}
	first := sb.DNS.QueryCount("servfail.test", dns.TypeMX)
	if first != cfg.Resolver.Attempts && first != policy.DefaultConfig().Resolver.Attempts {
		t.Errorf("three evaluations made %d MX queries; one lookup's attempts expected", first)
	}
	clock.Advance(11 * time.Second)
	e.Evaluate(context.Background(), policy.Request{Sender: "a@servfail.test"})
	if n := sb.DNS.QueryCount("servfail.test", dns.TypeMX); n != 2*first {
		t.Errorf("after error_ttl: %d MX queries, want %d", n, 2*first)
	}
}

func TestNonsensicalSettingsTakeDefaults(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Probe.MaxHosts, cfg.Probe.MaxAddrsPerHost, cfg.MaxPTRNames, cfg.Probe.Concurrency = -1, -3, -2, -5
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), spectest.Cases[0].Request())
	if r.Verdict() != policy.Pass {
		t.Errorf("%s", spectest.Findings(r.Checks))
	}
}

// However many distinct domains come by, the caches hold what they were given.
func TestCachesStayBounded(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	cfg.Cache.DNSEntries, cfg.Cache.ProbeEntries = 50, 10
	e := newEngine(t, cfg)
	for i := 0; i < 300; i++ { // each its own MX address (nothing listens: refused at once)
		sb.Zone.MX(fmt.Sprintf("p%d.test", i), 10, fmt.Sprintf("mx.p%d.test", i)).A(fmt.Sprintf("mx.p%d.test", i), fmt.Sprintf("127.0.13.%d", i%250+1), fmt.Sprintf("127.0.14.%d", i%250+1))
	}
	for i := 0; i < 500; i++ {
		e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("gone%d.test", i)})
	}
	for i := 0; i < 300; i++ {
		e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("p%d.test", i)})
	}
	if n := e.DNSCacheStats().Entries; n != 50 {
		t.Errorf("%d DNS entries, bound 50", n)
	}
	if st := e.ProbeCacheStats(); st.Entries != 10 || st.Misses < 250 {
		t.Errorf("probe cache: %+v, bound 10", st)
	}
}
