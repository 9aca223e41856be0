package inventory

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// BenchmarkRecord is what the inventory costs a decision on the mail path:
// a passing report with every check in it handed to Record, as the front
// ends' Seen hook does. The writer merges and stores behind it, on its
// own goroutine (mxbench milter measures the whole).
func BenchmarkRecord(b *testing.B) { record(b) }

// TestBenchmarkRecord is BenchmarkRecord's quick run.
func TestBenchmarkRecord(t *testing.T) { record(t) }

func record(tb testing.TB) {
	store, err := OpenLocal("", 1000, 1<<20, false, discard)
	if err != nil {
		tb.Fatal(err)
	}
	inv := New(store, Options{Log: discard})
	r := &policy.Report{Domain: "example.com", Decision: policy.Decision{Verdict: policy.Pass, Cause: -1}}
	for _, c := range policy.Catalogue() {
		r.Checks = append(r.Checks, policy.Result{ID: c.ID, Status: policy.StatusPass})
	}
	n := uint64(0)
	testkit.Iterate(tb, func() { inv.Record(r); n++ })
	if err := inv.Close(); err != nil {
		tb.Fatal(err)
	}
	// Every decision is counted, or counted as dropped.
	e, _ := store.Get(context.Background(), "example.com")
	if e == nil || e.Messages+inv.Dropped() != n || e.Verdict != "pass" {
		tb.Errorf("%d decisions recorded as %+v, %d dropped", n, e, inv.Dropped())
	}
}
