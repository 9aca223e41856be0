package sharedcache_test

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// BenchmarkWarmDecision is a warm decision without and with the fleet
// cache, side by side: warm decisions never touch Redis, so they must
// cost the same.
func BenchmarkWarmDecision(b *testing.B) {
	srv := redislab.Start(b)
	for _, name := range []string{"local", "shared"} {
		b.Run(name, func(b *testing.B) { warmDecisions(b, srv, name == "shared") })
	}
}

// TestBenchmarkWarmDecision is BenchmarkWarmDecision's quick run.
func TestBenchmarkWarmDecision(t *testing.T) {
	srv := redislab.Start(t)
	warmDecisions(t, srv, false)
	warmDecisions(t, srv, true)
}

func warmDecisions(tb testing.TB, srv *redislab.Server, shared bool) {
	sb := spectest.Sandbox(tb)
	cfg := spectest.Config(sb)
	if shared {
		c, err := sharedcacheNew(srv.URL)
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		cfg.Shared = c
	}
	e, err := policy.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	req := spectest.Cases[0].Request()
	if r := e.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		tb.Fatalf("warm-up: %s", spectest.Findings(r.Checks))
	}
	before := e.SharedStats()
	testkit.Iterate(tb, func() { e.Evaluate(context.Background(), req) })
	if after := e.SharedStats(); after != before {
		tb.Fatalf("warm decisions used the fleet cache: %+v, then %+v", before, after)
	}
}
