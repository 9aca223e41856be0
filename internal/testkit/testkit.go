// Package testkit holds the helpers mxguard's tests share.
package testkit

import (
	"strings"
	"sync"
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
