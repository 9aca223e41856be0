package policy

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

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

func warmTestEngine(t *testing.T) (*Engine, *countingDNS, Request) {
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
}

// A cache-only run that misses asks nothing of the network and counts no
// miss: the chains that run next look each name up once, and count it once.
func TestColdDecisionLooksUpEachNameOnce(t *testing.T) {
	e, dns, req := warmTestEngine(t)
	e.Evaluate(context.Background(), req)
	if st := e.DNSCacheStats(); st.Misses != uint64(dns.lookups()) || st.Misses == 0 {
		t.Errorf("cache misses %d, lookups upstream %d", st.Misses, dns.lookups())
	}
}

// A memo's refresh started by a cache-only run works the value out from
// the network; a miss in a cache-only run works nothing out.
func TestMemoFromACacheOnlyRun(t *testing.T) {
	clock, m, e, ev := memoEngine(t, true, 8)
	var missed atomic.Bool
	run := context.WithValue(context.Background(), cacheOnlyKey{}, &missed)
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
