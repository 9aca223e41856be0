package checkapi

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/peers"
)

// conns caps the API's connections in two pools. A connection is
// unauthenticated until one of its requests carries the token; strangers
// fill only that pool. A new connection beyond maxUnauth takes the place of
// the oldest unauthenticated one, whatever it is doing; at the total cap,
// of the oldest unauthenticated one or else the authenticated one idle
// longest. So a flood of connections that say nothing, trickle, or are
// refused cannot lock the control panel out.
type conns struct {
	slots     *peers.Slots
	maxUnauth int
	dropped   func()
	mu        sync.Mutex
	unauth    list.List // of *apiConn, the oldest first
}

type apiConn struct {
	net.Conn
	pool    *conns
	silence *peers.Silence
	unauth  *list.Element // nil once authenticated
	authed  atomic.Bool
	once    sync.Once
}

func newConns(max, maxUnauth int, dropped func()) *conns {
	return &conns{slots: peers.NewSlots(max), maxUnauth: maxUnauth, dropped: dropped}
}

// listener is ln with the pools applied.
type listener struct {
	net.Listener
	pool *conns
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	p := l.pool
	p.mu.Lock()
	full := p.unauth.Len() >= p.maxUnauth
	p.mu.Unlock()
	if full {
		p.evictUnauthenticated()
	}
	if !p.slots.Take(p.evict) {
		c.Close()
		return nil, net.ErrClosed
	}
	ac := &apiConn{Conn: c, pool: p}
	ac.silence = p.slots.Track(c.RemoteAddr().String(), func() { ac.Close() })
	ac.silence.Waiting()
	p.mu.Lock()
	ac.unauth = p.unauth.PushBack(ac)
	p.mu.Unlock()
	return ac, nil
}

// evict makes room at the total cap: the oldest unauthenticated
// connection, else the one idle longest.
func (p *conns) evict() bool {
	if p.evictUnauthenticated() {
		return true
	}
	return p.slots.Evict(func(*peers.Silence, time.Duration) { p.dropped() })
}

// evictUnauthenticated closes the oldest unauthenticated connection.
func (p *conns) evictUnauthenticated() bool {
	p.mu.Lock()
	el := p.unauth.Front()
	p.mu.Unlock()
	if el == nil {
		return false
	}
	p.dropped()
	el.Value.(*apiConn).Close()
	return true
}

func (c *apiConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		p := c.pool
		c.silence.Busy()
		p.mu.Lock()
		if c.unauth != nil {
			p.unauth.Remove(c.unauth)
			c.unauth = nil
		}
		p.mu.Unlock()
		p.slots.Release()
	})
	return err
}

// authenticated moves c to the authenticated pool: a request on it
// carried the token.
func (c *apiConn) authenticated() {
	if c.authed.Swap(true) {
		return
	}
	c.pool.mu.Lock()
	if c.unauth != nil {
		c.pool.unauth.Remove(c.unauth)
		c.unauth = nil
	}
	c.pool.mu.Unlock()
}

// state follows net/http's view of each connection: silent while it waits
// for a request, busy while one is answered.
func (p *conns) state(c net.Conn, st http.ConnState) {
	ac, ok := c.(*apiConn)
	if !ok {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		ac.silence.Waiting()
	case http.StateActive:
		ac.silence.Busy()
	case http.StateClosed, http.StateHijacked:
		ac.Close()
	}
}

type connKey struct{}

// withConn puts the connection into each of its requests' contexts, for
// the handler to mark it authenticated.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// markAuthenticated is called once a request's token is right.
func markAuthenticated(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*apiConn); ok {
		c.authenticated()
	}
}
