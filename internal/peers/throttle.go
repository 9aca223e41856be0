package peers

import (
	"sync"
	"time"
)

// LogThrottle lets through at most one log line per key (a peer) per
// interval and counts what it held back, so that one hostile peer cannot
// flood the log: the next line says how many were suppressed.
type LogThrottle struct {
	interval time.Duration
	mu       sync.Mutex
	keys     map[string]*throttled
}

type throttled struct {
	next       time.Time
	suppressed int
}

// throttleKeys bounds the peers remembered; beyond it the table starts
// afresh, which only errs towards logging.
const throttleKeys = 4096

// NewLogThrottle returns a throttle of one line per key per interval.
func NewLogThrottle(interval time.Duration) *LogThrottle {
	return &LogThrottle{interval: interval, keys: map[string]*throttled{}}
}

// Allow reports whether a line for key may be logged now, and how many
// lines for it were held back since the last one.
func (t *LogThrottle) Allow(key string, now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, seen := t.keys[key]
	if !seen {
		if len(t.keys) >= throttleKeys {
			clear(t.keys)
		}
		k = &throttled{}
		t.keys[key] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		return false, 0
	}
	suppressed, k.suppressed, k.next = k.suppressed, 0, now.Add(t.interval)
	return true, suppressed
}
