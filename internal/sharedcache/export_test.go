package sharedcache

import "time"

// TrialDue reports whether the breaker is open and its cool-down over: the
// next call is the one that tries the server again.
func (r *Redis) TrialDue() bool {
	b := &r.breaker
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openTill.IsZero() && !time.Now().Before(b.openTill) && !b.trying
}
