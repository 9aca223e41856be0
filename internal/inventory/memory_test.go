package inventory

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMemoryPerDomain measures what an inventoried domain costs, in this
// process and in Redis: domains like a hosting provider's, a quarter of
// them failing with one finding. MXGUARD_INVENTORY_DOMAINS sets how many
// (docs/BENCHMARKS.md used 1000000); the suite runs 20000.
func TestMemoryPerDomain(t *testing.T) {
	n := 20000
	if s := os.Getenv("MXGUARD_INVENTORY_DOMAINS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	batches := func(yield func([]Sighting) bool) {
		var batch []Sighting
		for i := range n {
			s := Sighting{Domain: fmt.Sprintf("customer-%07d.example", i), At: t0.Add(time.Duration(i) * time.Millisecond), Messages: 1, Verdict: "pass"}
			if i%4 == 0 {
				s.Verdict = "flag"
				s.Findings = []Finding{{ID: "dmarc.record", Status: "warn", Detail: "no DMARC record at _dmarc." + s.Domain,
					Fix: "Publish a DMARC record: _dmarc." + s.Domain + " TXT \"v=DMARC1; p=none; rua=mailto:...\""}}
			}
			if batch = append(batch, s); len(batch) == 2000 || i == n-1 {
				if !yield(batch) {
					return
				}
				batch = nil
			}
		}
	}
	ctx := context.Background()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	l, _ := OpenLocal("", n, 1<<40, false, discard)
	for b := range batches {
		l.Apply(ctx, b)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c, _ := l.Counts(ctx); c["pass"]+c["flag"] != n {
		t.Fatalf("%v kept of %d", c, n)
	}
	t.Logf("local: %d domains, %.0f bytes each (Go heap)", n, float64(after.HeapAlloc-before.HeapAlloc)/float64(n))
	runtime.KeepAlive(l)

	c := redisClient(t)
	used := func() int64 {
		info, err := c.Do(ctx, c.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory")
		return 0
	}
	r := NewRedis(connected(c), "mxguard:v1:", n, time.Minute)
	base := used()
	for b := range batches {
		if _, err := r.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := r.Counts(ctx); c["pass"]+c["flag"] != n {
		t.Fatalf("%v kept of %d", c, n)
	}
	t.Logf("redis: %d domains, %.0f bytes each (used_memory)", n, float64(used()-base)/float64(n))
}
