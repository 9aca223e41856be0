package policy_test

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
)

// BenchmarkEvaluateWarm is one decision with everything cached: what every
// message after the first from a sender costs.
func BenchmarkEvaluateWarm(b *testing.B) {
	sb := spectest.Sandbox(b)
	e := newEngine(b, spectest.Config(sb))
	req := spectest.Cases[0].Request() // a passing sender domain and sending host
	if r := e.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		b.Fatalf("warm-up: %s", spectest.Findings(r.Checks))
	}
	queries := sb.DNS.Queries()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e.Evaluate(context.Background(), req)
	}
	b.StopTimer()
	if sb.DNS.Queries() != queries {
		b.Fatalf("warm evaluations made %d DNS queries", sb.DNS.Queries()-queries)
	}
}
