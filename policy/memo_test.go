package policy

import (
	"context"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testkit"
)

// A memo keeps a value for cache.min_ttl, a temperror for cache.error_ttl,
// and nothing worked out after the context ended.
func TestRecall(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{"192.0.2.53"} // never asked
	cfg.Clock = clock.Now
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &memo{}
	if e.memos[m], err = newTTLLRU[any, any](8, clock.Now); err != nil {
		t.Fatal(err)
	}
	ev := newEvaluation(e, Request{})
	ctx := context.Background()
	calls := 0
	work := func(temp bool) func() (int, bool) {
		return func() (int, bool) { calls++; return calls, temp }
	}
	expect := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got the value of call %d, want %d", what, got, want)
		}
	}
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
