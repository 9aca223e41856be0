package policy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testkit"
)

// memoEngine is an engine on a fake clock, with a memo of its own holding
// size values, and an evaluation on it.
func memoEngine(t *testing.T, prefetch bool, size int) (*testkit.Clock, *memo, *Engine, *evaluation) {
	t.Helper()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{"192.0.2.53"} // never asked
	cfg.Clock = clock.Now
	cfg.Cache.Prefetch = prefetch
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &memo{}
	if e.memos[m], err = newMemoStore(size, e.cfg); err != nil {
		t.Fatal(err)
	}
	return clock, m, e, newEvaluation(e, Request{})
}

// refreshesInFlight counts the memos' refreshes under way.
func (e *Engine) refreshesInFlight() int {
	n := 0
	for _, s := range e.memos {
		s.mu.Lock()
		n += len(s.refreshing)
		s.mu.Unlock()
	}
	return n
}

// expectCall reports a recalled value that is not the value of call want.
func expectCall(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got the value of call %d, want %d", what, got, want)
	}
}

// A memo keeps a value for cache.min_ttl, a temperror for cache.error_ttl,
// and nothing worked out after the context ended. (Without cache.prefetch:
// TestMemoRefresh is the refresh ahead of expiry.)
func TestRecall(t *testing.T) {
	clock, m, e, ev := memoEngine(t, false, 8)
	ctx := context.Background()
	calls := 0
	work := func(temp bool) func(context.Context) (int, bool) {
		return func(context.Context) (int, bool) { calls++; return calls, temp }
	}
	expect := func(what string, got, want int) { t.Helper(); expectCall(t, what, got, want) }
	minTTL, errorTTL := e.cfg.Cache.MinTTL, e.cfg.Cache.ErrorTTL

	expect("first", recall(ctx, ev, m, "a", work(false)), 1)
	clock.Advance(minTTL - time.Second)
	expect("within min_ttl", recall(ctx, ev, m, "a", work(false)), 1)
	clock.Advance(time.Second)
	expect("after min_ttl", recall(ctx, ev, m, "a", work(false)), 2)

	expect("a temperror", recall(ctx, ev, m, "b", work(true)), 3)
	clock.Advance(errorTTL - time.Second)
	expect("within error_ttl", recall(ctx, ev, m, "b", work(true)), 3)
	clock.Advance(time.Second)
	expect("after error_ttl", recall(ctx, ev, m, "b", work(false)), 4)

	ended, cancel := context.WithCancel(ctx)
	cancel()
	expect("after the deadline", recall(ended, ev, m, "c", work(false)), 5)
	expect("not kept", recall(ctx, ev, m, "c", work(false)), 6)
}

// With cache.prefetch, a value asked for in the last quarter of its life
// is worked out again in the background: the decision that asks gets the
// value there is at once, others asking meanwhile start no second refresh,
// and the new value outlives the old one. A failed refresh leaves the old
// value until it expires.
func TestMemoRefresh(t *testing.T) {
	clock, m, e, ev := memoEngine(t, true, 8)
	ctx := context.Background()
	minTTL := e.cfg.Cache.MinTTL
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	work := func(temp bool) func(context.Context) (int, bool) {
		return func(context.Context) (int, bool) {
			<-release
			mu.Lock()
			defer mu.Unlock()
			calls++
			return calls, temp
		}
	}
	expect := func(what string, got, want int) { t.Helper(); expectCall(t, what, got, want) }
	close(release)
	expect("first", recall(ctx, ev, m, "a", work(false)), 1)
	release = make(chan struct{})

	clock.Advance(minTTL * 8 / 10) // the last quarter
	for range 5 {
		expect("while it is refreshed", recall(ctx, ev, m, "a", work(false)), 1)
	}
	if n := e.refreshesInFlight(); n != 1 {
		t.Errorf("%d refreshes of one key in flight, want 1", n)
	}
	close(release)
	testkit.WaitFor(t, "the refresh", func() bool { return e.refreshesInFlight() == 0 })
	clock.Advance(minTTL * 3 / 10) // past the first value's life
	expect("refreshed", recall(ctx, ev, m, "a", work(false)), 2)

	clock.Advance(minTTL / 2) // the refreshed value's last quarter; the refresh fails
	expect("aging", recall(ctx, ev, m, "a", work(true)), 2)
	testkit.WaitFor(t, "the failed refresh", func() bool { return e.refreshesInFlight() == 0 })
	expect("after a failed refresh", recall(ctx, ev, m, "a", work(true)), 2)
	testkit.WaitFor(t, "the failed refresh", func() bool { return e.refreshesInFlight() == 0 })
	clock.Advance(minTTL / 2) // past its life
	expect("expired", recall(ctx, ev, m, "a", work(false)), 5)

	// A refresh whose work panics leaves the value too, and ends.
	clock.Advance(minTTL * 8 / 10)
	expect("before a panicking refresh", recall(ctx, ev, m, "a", func(context.Context) (int, bool) { panic("hostile input") }), 5)
	testkit.WaitFor(t, "the panicking refresh", func() bool { return e.refreshesInFlight() == 0 })
	expect("after a panicking refresh", recall(ctx, ev, m, "a", work(false)), 5)
}

// However many values age at once, at most memoRefreshes refreshes run.
func TestMemoRefreshesAreBounded(t *testing.T) {
	clock, m, e, ev := memoEngine(t, true, 4*memoRefreshes)
	ctx := context.Background()
	release := make(chan struct{})
	keys := 3 * memoRefreshes
	for k := range keys {
		recall(ctx, ev, m, k, func(context.Context) (int, bool) { return k, false })
	}
	clock.Advance(e.cfg.Cache.MinTTL * 8 / 10)
	for k := range keys {
		if got := recall(ctx, ev, m, k, func(context.Context) (int, bool) { <-release; return -1, false }); got != k {
			t.Fatalf("key %d: got %d while it is refreshed", k, got)
		}
	}
	if n := e.refreshesInFlight(); n != memoRefreshes {
		t.Errorf("%d refreshes in flight, want %d", n, memoRefreshes)
	}
	close(release)
	testkit.WaitFor(t, "the refreshes", func() bool { return e.refreshesInFlight() == 0 })
}

// countingDNS is a fakeDNS whose answers can change, counting what it is asked.
type countingDNS struct {
	mu      sync.Mutex
	answers fakeDNS
	asked   map[string]int
	fail    bool // every lookup fails
}

func (c *countingDNS) Lookup(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[name]++
	if c.fail {
		return nil, &dnsError{Kind: errServFail, Name: name, Type: qtype, Err: errors.New("SERVFAIL")}
	}
	return c.answers.Lookup(ctx, name, qtype)
}

func (c *countingDNS) set(key string, a *dnsAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers[key] = a
}

// A sender domain in steady use never waits for its SPF or DMARC TXT: the
// spf.relay and dmarc.record results are refreshed ahead of expiry from
// refreshed answers, so a changed record shows within one cache.min_ttl,
// and a failing refresh leaves the last result until it expires, not
// longer.
func TestSteadyDomainNeverWaitsForTXT(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{"192.0.2.53"} // never asked
	cfg.Clock = clock.Now
	ttl := time.Minute
	cfg.Cache.MinTTL, cfg.Cache.MaxTTL = ttl, ttl // every answer and result lives a minute
	cfg.OutboundIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}
	cfg.EgressHELO = "relay.example.test"
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	txt := func(s string) *dnsAnswer {
		return &dnsAnswer{Kind: kindFound, TXT: []string{s}, TTL: ttl, TTLKnown: true}
	}
	dns := &countingDNS{asked: map[string]int{}, answers: fakeDNS{
		"TXT example.com":        txt("v=spf1 ip4:192.0.2.10 -all"),
		"TXT _dmarc.example.com": txt("v=DMARC1; p=none"),
	}}
	e.resolver.next = dns
	req := Request{Sender: "alice@example.com"}
	decide := func() (spfR, dmarcR Result) {
		spfR = e.runCheck(context.Background(), newEvaluation(e, req), slices.Index(e.checks, &spfRelay))
		dmarcR = e.runCheck(context.Background(), newEvaluation(e, req), slices.Index(e.checks, &dmarcRecord))
		testkit.WaitFor(t, "the refreshes", func() bool { return e.refreshesInFlight() == 0 })
		return spfR, dmarcR
	}
	decide() // warm-up: the first decision waits
	misses := e.resolver.counter.misses.Load()

	step := 10 * time.Second
	changed := time.Duration(-1)
	failing := 6 * ttl
	for elapsed := step; elapsed <= failing+4*step; elapsed += step {
		clock.Advance(step)
		if elapsed == 3*ttl {
			dns.set("TXT _dmarc.example.com", txt("v=DMARC1; p=reject"))
			changed = elapsed
		}
		if elapsed == failing {
			dns.mu.Lock()
			dns.fail = true // SERVFAIL from now on
			dns.mu.Unlock()
		}
		s, d := decide()
		if s.Status != StatusPass || d.Status != StatusPass {
			t.Fatalf("at %v: %s %s: %s; %s %s: %s", elapsed, s.ID, s.Status, s.Detail, d.ID, d.Status, d.Detail)
		}
		if got := e.resolver.counter.misses.Load() - misses; got != 0 {
			t.Fatalf("at %v: steady decisions waited for %d lookups", elapsed, got)
		}
		switch seen := strings.Contains(d.Detail, "p=reject"); {
		case changed < 0 && seen:
			t.Fatalf("at %v: %s before the change", elapsed, d.Detail)
		case changed >= 0 && !seen && elapsed-changed > ttl:
			t.Fatalf("at %v: %s, a minute after the record changed", elapsed, d.Detail)
		}
	}
	// The failed refreshes left the last results, worked out from answers
	// fetched before the failures: a minute after those, they are gone.
	clock.Advance(failing + ttl - (failing + 4*step))
	if s, d := decide(); s.Status != StatusTempError || d.Status != StatusTempError {
		t.Errorf("a minute into the failures: %s %s: %s; %s %s: %s, want temperror", s.ID, s.Status, s.Detail, d.ID, d.Status, d.Detail)
	}
	if n := dns.asked["example.com"]; n < 6 {
		t.Errorf("the SPF TXT was asked %d times in six minutes of steady use: not refreshed", n)
	}
}
