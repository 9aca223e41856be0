// Package testkit holds the helpers mxguard's tests share.
package testkit

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// SyncBuffer is a log sink that tests read while the code under test
// writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor polls until cond holds. Its deadline is only a backstop for a
// broken build: the conditions come true in milliseconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// Clock is a clock for policy.Config.Clock that moves only when told, so
// that a test can let cached entries age without waiting.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock is a Clock at start. A test whose values reach a real Redis
// starts at time.Now: they are written with their absolute expiry.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// quickIterations is how many times a benchmark's quick run does its work.
const quickIterations = 20

// Iterate runs body b.N times when tb is a benchmark (timer reset,
// allocations reported), and a few times when it is a test: the quick
// run through which the test suite makes a benchmark's own checks fail
// when they break, rather than only whoever runs -bench next.
func Iterate(tb testing.TB, body func()) {
	if b, ok := tb.(*testing.B); ok {
		b.ReportAllocs()
		for b.Loop() {
			body()
		}
		return
	}
	for range quickIterations {
		body()
	}
}

// IterateParallel is Iterate for a body that runs on several goroutines
// (b.RunParallel), each looping while next says so.
func IterateParallel(tb testing.TB, body func(next func() bool)) {
	if b, ok := tb.(*testing.B); ok {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) { body(pb.Next) })
		return
	}
	var left atomic.Int64
	left.Store(quickIterations)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { body(func() bool { return left.Add(-1) >= 0 }) })
	}
	wg.Wait()
}
