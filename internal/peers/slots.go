package peers

import (
	"container/list"
	"sync"
	"time"
)

// Slots caps the connections a front end serves. At the cap, the connection
// that has waited longest for its peer is closed to make room, so that a
// crowd of connections that say nothing cannot keep the MTA out; only when
// every connection is busy does a new one wait. The connections waiting
// are kept in the order they began to wait, so that finding the one to
// close costs the same for ten connections as for ten thousand.
type Slots struct {
	ch     chan struct{}
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	waiting list.List // of *Silence, the longest silent first
}

// NewSlots returns n slots.
func NewSlots(n int) *Slots {
	return &Slots{ch: make(chan struct{}, n), closed: make(chan struct{})}
}

// Silence is a connection's place among those waiting for their peer.
type Silence struct {
	// Peer names the connection's peer for a log line.
	Peer  string
	slots *Slots
	close func() // closes the connection, freeing its slot
	el    *list.Element
	since time.Time
}

// Track returns the Silence of a connection to peer that close closes.
func (s *Slots) Track(peer string, close func()) *Silence {
	return &Silence{Peer: peer, slots: s, close: close}
}

// Waiting marks the connection as waiting for its peer from now.
func (x *Silence) Waiting() {
	s := x.slots
	s.mu.Lock()
	x.since = time.Now()
	if x.el == nil {
		x.el = s.waiting.PushBack(x)
	} else {
		s.waiting.MoveToBack(x.el)
	}
	s.mu.Unlock()
}

// Busy marks the connection as working on what its peer sent (or gone).
func (x *Silence) Busy() {
	s := x.slots
	s.mu.Lock()
	if x.el != nil {
		s.waiting.Remove(x.el)
		x.el = nil
	}
	s.mu.Unlock()
}

// Longest is the connection silent longest and for how long; nil when
// every connection is busy.
func (s *Slots) Longest() (*Silence, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el := s.waiting.Front(); el != nil {
		x := el.Value.(*Silence)
		return x, time.Since(x.since)
	}
	return nil, 0
}

// Evict closes the connection silent longest; it reports whether there was
// one, and for how long it had been silent. evicted, when not nil, is
// called first, for the log and the metrics.
func (s *Slots) Evict(evicted func(x *Silence, silent time.Duration)) bool {
	x, silent := s.Longest()
	if x == nil {
		return false
	}
	x.Busy() // out of the running, whatever its goroutine does next
	if evicted != nil {
		evicted(x, silent)
	}
	x.close()
	return true
}

// Take waits for a slot. At the cap it calls evict, which makes room (see
// Evict) and reports whether it could. It reports false once Close was
// called.
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
