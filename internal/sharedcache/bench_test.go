package sharedcache_test

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
)

// BenchmarkWarmDecision is a warm decision without and with the fleet
// cache, side by side: warm decisions never touch Redis, so they must
// cost the same.
func BenchmarkWarmDecision(b *testing.B) {
	srv := redislab.Start(b)
	for _, shared := range []bool{false, true} {
		name := "local"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			sb := spectest.Sandbox(b)
			cfg := spectest.Config(sb)
			if shared {
				c, err := sharedcacheNew(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cfg.Shared = c
			}
			e, err := policy.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			req := spectest.Cases[0].Request()
			e.Evaluate(context.Background(), req)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				e.Evaluate(context.Background(), req)
			}
		})
	}
}
