package policy_test

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// BenchmarkEvaluateWarm is one decision with everything cached: what every
// message after the first from a sender costs.
func BenchmarkEvaluateWarm(b *testing.B) { evaluateWarm(b) }

// TestBenchmarkEvaluateWarm is BenchmarkEvaluateWarm's quick run.
func TestBenchmarkEvaluateWarm(t *testing.T) { evaluateWarm(t) }

func evaluateWarm(tb testing.TB) {
	sb := spectest.Sandbox(tb)
	e := newEngine(tb, spectest.Config(sb))
	req := spectest.Cases[0].Request() // a passing sender domain and sending host
	if r := e.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		tb.Fatalf("warm-up: %s", spectest.Findings(r.Checks))
	}
	queries := sb.DNS.Queries()
	testkit.Iterate(tb, func() { e.Evaluate(context.Background(), req) })
	if sb.DNS.Queries() != queries {
		tb.Fatalf("warm evaluations made %d DNS queries", sb.DNS.Queries()-queries)
	}
}
