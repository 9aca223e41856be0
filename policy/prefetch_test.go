package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// With cache.prefetch, a domain in steady use never waits for DNS or a
// probe: an entry asked for in the last quarter of its life is refreshed
// in the background, and is still fresh when its old lifetime ends.
func TestPrefetchKeepsSteadyDomainsWarm(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := spectest.Config(sb)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clock.Now
	cfg.Cache.MinTTL, cfg.Cache.MaxTTL = time.Minute, time.Minute // every answer lives 1 minute
	cfg.Cache.ProbeAcceptTTL = time.Minute
	e := newEngine(t, cfg)
	req := policy.Request{Domain: "ok.test"}
	e.Evaluate(context.Background(), req)
	cold := sb.DNS.QueryCount("ok.test", 15)

	clock.Advance(50 * time.Second) // the last quarter: served from the cache, refreshed behind
	if r := e.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		t.Fatalf("%s", spectest.Findings(r.Checks))
	}
	testkit.WaitFor(t, "the refresh of ok.test's MX", func() bool { return sb.DNS.QueryCount("ok.test", 15) == cold+1 })

	clock.Advance(20 * time.Second) // past the first answer's lifetime
	e.Evaluate(context.Background(), req)
	if got := sb.DNS.QueryCount("ok.test", 15); got != cold+1 {
		t.Errorf("the MX was looked up again when its first lifetime ended (%d lookups)", got)
	}
}
