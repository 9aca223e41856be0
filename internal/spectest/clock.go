package spectest

import (
	"sync"
	"time"
)

// Clock is a clock for policy.Config.Clock that moves only when told, so
// that a test can let cached entries age without waiting.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock is a Clock at the present time: values in a real Redis are
// written with their absolute expiry, which a test sets from time.Now.
func NewClock() *Clock { return &Clock{now: time.Now()} }

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
