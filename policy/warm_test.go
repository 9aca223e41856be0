package policy

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/mxguard/mxguard/internal/testkit"
)

// lookups is how many lookups reached c.
func (c *countingDNS) lookups() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.asked {
		n += k
	}
	return n
}

// checkRuns wraps every check of e to record, per run, whether it ran
// from the caches alone.
type checkRuns struct {
	mu   sync.Mutex
	runs map[CheckID][]bool
}

func recordRuns(e *Engine) *checkRuns {
	rec := &checkRuns{runs: map[CheckID][]bool{}}
	e.checks = slices.Clone(e.checks)
	for i, c := range e.checks {
		wrapped := *c
		wrapped.gate = func(ctx context.Context, ev *evaluation) string { // every run asks its gate first
			rec.mu.Lock()
			rec.runs[c.id] = append(rec.runs[c.id], cacheOnly(ctx))
			rec.mu.Unlock()
			return c.gate(ctx, ev)
		}
		e.checks[i] = &wrapped
	}
	return rec
}

func (r *checkRuns) take() map[CheckID][]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := r.runs
	r.runs = map[CheckID][]bool{}
	return runs
}

func warmTestEngine(t testing.TB) (*Engine, *countingDNS, Request) {
	dns := &countingDNS{asked: map[string]int{}, answers: fakeDNS{
		"MX a.example":                  {Kind: kindFound, MX: []mxHost{{Pref: 10, Host: "mx.a.example"}}},
		"A mx.a.example":                {Kind: kindFound, Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.25")}},
		"TXT a.example":                 {Kind: kindFound, TXT: []string{"v=spf1 ip4:198.51.100.7 -all"}},
		"TXT _dmarc.a.example":          {Kind: kindFound, TXT: []string{"v=DMARC1; p=reject"}},
		"PTR 7.100.51.198.in-addr.arpa": {Kind: kindFound, Names: []string{"relay.a.example"}},
		"A relay.a.example":             {Kind: kindFound, Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.7")}},
	}}
	accepts := fakeProbes{netip.MustParseAddr("198.51.100.25"): {Outcome: OutcomeAccept, Code: 220, Greeting: "220 ok"}}
	e := fakeEngine(t, dns, accepts)
	return e, dns, Request{Sender: "x@a.example", ClientIP: netip.MustParseAddr("198.51.100.7"), HELO: "relay.a.example"}
}

// A decision whose facts are all cached runs every check once, in the
// caller's goroutine from the caches alone, and reports what the chains
// reported when they looked the facts up.
func TestWarmDecisionRunsFromTheCaches(t *testing.T) {
	e, dns, req := warmTestEngine(t)
	rec := recordRuns(e)
	reports := &reportLookups{}
	e.cfg.Observer = reports
	cold := e.Evaluate(context.Background(), req)
	if cold.Incomplete || cold.Verdict() != Pass {
		t.Fatalf("cold decision: %s incomplete=%v: %v", cold.Verdict(), cold.Incomplete, cold.Checks)
	}
	ranTheChains := false
	for _, runs := range rec.take() {
		ranTheChains = ranTheChains || slices.Contains(runs, false)
	}
	if !ranTheChains {
		t.Error("the cold decision did not run the chains")
	}
	lookups := dns.lookups()
	warm := e.Evaluate(context.Background(), req)
	if got := dns.lookups() - lookups; got != 0 {
		t.Errorf("the warm decision made %d lookups", got)
	}
	runs := rec.take()
	for _, c := range e.checks {
		if c.chain == chainMessage {
			continue
		}
		if got := runs[c.id]; !slices.Equal(got, []bool{true}) {
			t.Errorf("%s: runs from the caches alone %v, want one, [true]", c.id, got)
		}
	}
	warm.Elapsed, cold.Elapsed = 0, 0
	if !reflect.DeepEqual(warm, cold) {
		t.Errorf("warm report differs:\n%+v\ncold:\n%+v", warm, cold)
	}
	// The same request again: the report remembered, no check run.
	again := e.Evaluate(context.Background(), req)
	if runs := rec.take(); len(runs) != 0 {
		t.Errorf("the remembered report ran checks: %v", runs)
	}
	again.Elapsed = 0
	if !reflect.DeepEqual(again, cold) {
		t.Errorf("remembered report differs:\n%+v\ncold:\n%+v", again, cold)
	}
	if reports.hits != 1 || reports.misses != 2 {
		t.Errorf("report lookups: %d hits, %d misses; want 1, 2", reports.hits, reports.misses)
	}
}

// reportLookups counts the lookups of remembered reports.
type reportLookups struct {
	nopObserver
	hits, misses int
}

func (r *reportLookups) CacheLookup(cache string, hit bool) {
	switch {
	case cache != "report":
	case hit:
		r.hits++
	default:
		r.misses++
	}
}

// A cache-only run that misses asks nothing of the network and counts no
// miss: the chains that run next look each name up once, and count it once.
func TestColdDecisionLooksUpEachNameOnce(t *testing.T) {
	e, dns, req := warmTestEngine(t)
	e.Evaluate(context.Background(), req)
	first := e.DNSCacheStats()
	if first.Misses != uint64(dns.lookups()) || first.Misses == 0 {
		t.Errorf("cache misses %d, lookups upstream %d", first.Misses, dns.lookups())
	}
	// The probe forgotten: a cache-only run reads DNS answers, then misses,
	// and the chains read them again. They count as they do without it.
	hits := func(evaluate func(context.Context, Request) *Report) uint64 {
		e.prober.lru.lru.Purge()
		before := e.DNSCacheStats().Hits
		evaluate(context.Background(), req)
		return e.DNSCacheStats().Hits - before
	}
	if cold, both := hits(e.EvaluateCold), hits(e.Evaluate); cold != both || cold == 0 {
		t.Errorf("DNS hits: %d through the chains alone, %d after a cache-only run", cold, both)
	}
	if st := e.DNSCacheStats(); st.Misses != first.Misses {
		t.Errorf("DNS misses: %d, then %d", first.Misses, st.Misses)
	}
}

// A remembered report keeps the entries it was made from recently used,
// as running its checks would: a full cache evicts others first.
func TestRememberedReportKeepsItsEntriesRecent(t *testing.T) {
	e, dns, req := warmTestEngine(t)
	dns.set("A other.example", &dnsAnswer{Kind: kindFound, Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.99")}})
	ctx := context.Background()
	e.Evaluate(ctx, req)
	e.Evaluate(ctx, req) // remembered
	e.resolver.Lookup(ctx, "other.example", mdns.TypeA)
	e.Evaluate(ctx, req)              // answered with the report
	keys := e.resolver.lru.lru.Keys() // oldest first
	if i := slices.Index(keys, dnsKey{"other.example", mdns.TypeA}); i < 0 || i == len(keys)-1 {
		t.Errorf("other.example is at %d of %d keys: the report's entries are older", i, len(keys))
	}
	if st := e.DNSCacheStats(); st.Entries == 0 {
		t.Fatal("nothing cached")
	}
}

// A memo's refresh started by a cache-only run works the value out from
// the network; a miss in a cache-only run works nothing out.
func TestMemoFromACacheOnlyRun(t *testing.T) {
	clock, m, e, ev := memoEngine(t, true, 8)
	state := &cacheOnlyRun{}
	missed := &state.missed
	run := context.WithValue(context.Background(), cacheOnlyKey{}, state)
	worked := 0
	v := recall(run, ev, m, "k", func(context.Context) (int, bool) { worked++; return 1, false })
	if v != 0 || worked != 0 || !missed.Load() {
		t.Fatalf("a miss from the caches alone: value %d, worked %d times, missed %v", v, worked, missed.Load())
	}
	recall(context.Background(), ev, m, "k", func(context.Context) (int, bool) { return 1, false })
	clock.Advance(e.cfg.Cache.MinTTL * 7 / 8) // in the last quarter of its life
	refreshed := make(chan bool, 1)
	missed.Store(false)
	v = recall(run, ev, m, "k", func(ctx context.Context) (int, bool) { refreshed <- cacheOnly(ctx); return 2, false })
	if v != 1 || missed.Load() {
		t.Errorf("an aging value from the caches alone: %d, missed %v", v, missed.Load())
	}
	if fromCaches := <-refreshed; fromCaches {
		t.Error("the refresh ran from the caches alone")
	}
	testkit.WaitFor(t, "the refresh to end", func() bool { return e.refreshesInFlight() == 0 })
}

// clockedWarmEngine is warmTestEngine's engine on a fake clock.
func clockedWarmEngine(t *testing.T, probes fakeProbes) (*Engine, *countingDNS, *testkit.Clock, Request) {
	_, dns, req := warmTestEngine(t)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{"192.0.2.53"} // never asked
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	cfg.Clock = clock.Now
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.resolver.next, e.prober.next = dns, probes
	return e, dns, clock, req
}

// A remembered report stands until the first entry it was made from is
// due for refresh (cache.min_ttl's last quarter here); then the checks run
// again, and refresh it.
func TestRememberedReportLastsUntilARefreshIsDue(t *testing.T) {
	accepts := fakeProbes{netip.MustParseAddr("198.51.100.25"): {Outcome: OutcomeAccept, Code: 220, Greeting: "220 ok"}}
	e, dns, clock, req := clockedWarmEngine(t, accepts)
	rec := recordRuns(e)
	ctx := context.Background()
	e.Evaluate(ctx, req)
	e.Evaluate(ctx, req) // from the caches, and remembered
	rec.take()
	due := e.cfg.Cache.MinTTL - e.cfg.Cache.MinTTL/4
	clock.Advance(due - time.Second)
	if r := e.Evaluate(ctx, req); r.Verdict() != Pass {
		t.Fatalf("remembered: %s", r.Verdict())
	}
	if runs := rec.take(); len(runs) != 0 {
		t.Errorf("before a refresh is due, checks ran: %v", runs)
	}
	lookups := dns.lookups()
	clock.Advance(2 * time.Second)
	if r := e.Evaluate(ctx, req); r.Verdict() != Pass {
		t.Fatalf("once a refresh is due: %s", r.Verdict())
	}
	if runs := rec.take(); len(runs) == 0 {
		t.Error("once a refresh is due, no check ran")
	}
	testkit.WaitFor(t, "the refreshes ahead of expiry", func() bool { return dns.lookups() > lookups })
}

// A report that read the egress state, which no cache entry holds, is not
// remembered: a host that answers no probe is judged anew.
func TestReportOfUnansweredProbesIsNotRemembered(t *testing.T) {
	silent := fakeProbes{netip.MustParseAddr("198.51.100.25"): {Outcome: OutcomeConnectTimeout, Detail: "no answer"}}
	e, _, _, req := clockedWarmEngine(t, silent)
	rec := recordRuns(e)
	ctx := context.Background()
	e.Evaluate(ctx, req)
	e.Evaluate(ctx, req)
	rec.take()
	if r := e.Evaluate(ctx, req); r.Check(MXPort25).Status != StatusTempError {
		t.Fatalf("mx.port25: %v", r.Check(MXPort25))
	}
	if runs := rec.take(); len(runs[MXPort25]) != 1 {
		t.Errorf("mx.port25 runs: %v, want one", runs[MXPort25])
	}
}

// Each decision gets a report of its own: changing one changes no other.
func TestRememberedReportsAreCopies(t *testing.T) {
	e, _, req := warmTestEngine(t)
	ctx := context.Background()
	e.Evaluate(ctx, req)
	first := e.Evaluate(ctx, req)
	first.Checks[0].Detail = "changed"
	first.Domain = "changed.example"
	if again := e.Evaluate(ctx, req); again.Checks[0].Detail == "changed" || again.Domain != "a.example" {
		t.Errorf("a change to one report reached the next: %q %q", again.Domain, again.Checks[0].Detail)
	}
	other := req
	other.ClientIP = netip.MustParseAddr("198.51.100.8")
	if r := e.Evaluate(ctx, other); r.ClientIP != other.ClientIP || r.Check(ClientFCrDNS).Status == StatusPass {
		t.Errorf("another client got %s, fcrdns %s", r.ClientIP, r.Check(ClientFCrDNS).Status)
	}
}

// BenchmarkEvaluateFromTheCaches is a warm decision not remembered: every
// check run from the caches (BenchmarkEvaluateWarm is the remembered one).
func BenchmarkEvaluateFromTheCaches(b *testing.B) { evaluateFromTheCaches(b) }

// TestBenchmarkEvaluateFromTheCaches is its quick run.
func TestBenchmarkEvaluateFromTheCaches(t *testing.T) { evaluateFromTheCaches(t) }

func evaluateFromTheCaches(tb testing.TB) {
	e, dns, req := warmTestEngine(tb)
	ctx := context.Background()
	e.Evaluate(ctx, req)
	lookups := dns.lookups()
	testkit.Iterate(tb, func() {
		e.reports.lru.Purge()
		if r := e.Evaluate(ctx, req); r.Verdict() != Pass {
			tb.Fatalf("%s: %v", r.Verdict(), r.Checks)
		}
	})
	if n := dns.lookups() - lookups; n != 0 {
		tb.Fatalf("warm decisions made %d lookups", n)
	}
}

// The remembered reports take at most an eighth of the DNS cache's byte
// bound, however many requests there are.
func TestRememberedReportsStayBounded(t *testing.T) {
	e, _, req := warmTestEngine(t)
	reports, err := newSizedLRU(1000, 16<<10, reportSize, e.cfg.Clock)
	if err != nil {
		t.Fatal(err)
	}
	e.reports = reports
	ctx := context.Background()
	for i := range 50 {
		r := req
		r.HELO = fmt.Sprintf("relay%d.a.example", i) // a request of its own
		e.Evaluate(ctx, r)
		e.Evaluate(ctx, r)
	}
	if n, b := e.reports.lru.Len(), e.reports.bytes.Load(); b > 16<<10 || n == 0 || n >= 50 {
		t.Errorf("%d reports remembered in %d bytes, bound 16 KiB", n, b)
	}
}
