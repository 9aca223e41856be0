package peers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Slots caps the connections a front end serves. At the cap, the connection
// that has waited longest for its peer is closed to make room, so that a
// crowd of connections that say nothing cannot keep the MTA out; only when
// every connection is busy does a new one wait.
type Slots struct {
	ch     chan struct{}
	closed chan struct{}
	once   sync.Once
}

// NewSlots returns n slots.
func NewSlots(n int) *Slots {
	return &Slots{ch: make(chan struct{}, n), closed: make(chan struct{})}
}

// Silence is what a connection records for Take to choose by: when it began
// waiting for its peer.
type Silence struct{ since atomic.Int64 }

// Waiting marks the connection as waiting for its peer from now.
func (s *Silence) Waiting() { s.since.Store(time.Now().UnixNano()) }

// Busy marks the connection as working on what its peer sent.
func (s *Silence) Busy() { s.since.Store(0) }

// For is how long the connection has waited; false while it is busy.
func (s *Silence) For() (time.Duration, bool) {
	since := s.since.Load()
	if since == 0 {
		return 0, false
	}
	return time.Since(time.Unix(0, since)), true
}

// Longest returns the member of conns silent longest, and for how long; ok
// is false when every one is busy.
func Longest[C comparable](conns map[C]struct{}, silence func(C) *Silence) (victim C, silent time.Duration, ok bool) {
	for c := range conns {
		if d, waiting := silence(c).For(); waiting && d > silent {
			victim, silent, ok = c, d, true
		}
	}
	return victim, silent, ok
}

// Take waits for a slot. At the cap it calls evict, which closes the
// connection silent longest (freeing its slot) and reports whether there
// was one. It reports false once Close was called.
func (s *Slots) Take(evict func() bool) bool {
	for {
		select {
		case s.ch <- struct{}{}:
			return true
		default:
		}
		if evict() {
			continue
		}
		select {
		case s.ch <- struct{}{}:
			return true
		case <-s.closed:
			return false
		}
	}
}

// Release frees a slot taken.
func (s *Slots) Release() { <-s.ch }

// Close ends every wait in Take.
func (s *Slots) Close() { s.once.Do(func() { close(s.closed) }) }
