package checkapi

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// limiter is a token bucket per client. Only a full bucket is forgotten
// (a client forgotten starts again with a full one, so nothing is lost):
// a refused client's bucket cannot be pushed out by a flood of other
// clients. While every bucket kept is still refilling, new clients share
// one bucket, so a flood from many addresses costs the newcomers, not the
// clients already limited.
type limiter struct {
	mu       sync.Mutex
	buckets  *lru.Cache[netip.Prefix, *bucket]
	size     int
	overflow bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(size int) *limiter {
	c, _ := lru.New[netip.Prefix, *bucket](size) // size is a positive constant
	return &limiter{buckets: c, size: size}
}

// allow takes a token from client's bucket, which holds up to rate tokens
// (at least 1) and refills at rate per second; refused, it says how long
// until the next token.
func (l *limiter) allow(client netip.Prefix, rate float64, now time.Time) (bool, time.Duration) {
	capacity := math.Max(1, rate)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets.Get(client)
	if !ok {
		b = &bucket{tokens: capacity, last: now}
		if l.buckets.Len() >= l.size {
			if _, oldest, _ := l.buckets.GetOldest(); oldest.refilled(capacity, rate, now) < capacity {
				b = &l.overflow // every bucket kept is in use: none is forgotten
			}
		}
		if b != &l.overflow {
			l.buckets.Add(client, b)
		}
	}
	b.tokens, b.last = b.refilled(capacity, rate, now), now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// refilled is what the bucket holds at now.
func (b *bucket) refilled(capacity, rate float64, now time.Time) float64 {
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		return math.Min(capacity, b.tokens+elapsed*rate)
	}
	return b.tokens
}

// clientKey is what a client is limited as: its address, or its /64 for
// IPv6, where one host commonly holds a whole /64.
func clientKey(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}
