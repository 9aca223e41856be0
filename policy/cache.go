package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// CacheConfig bounds the caches and sets their lifetimes.
type CacheConfig struct {
	// DNSEntries and ProbeEntries bound the two LRUs by entry count.
	DNSEntries   int
	ProbeEntries int
	// DNSMaxBytes bounds the DNS cache by the size of what it holds too: a
	// hostile zone can make each answer kilobytes.
	DNSMaxBytes int
	// MinTTL and MaxTTL clamp the TTL of positive DNS answers.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL is used for NXDOMAIN/NODATA without an SOA; NegativeMaxTTL
	// caps the SOA minimum of negative answers.
	NegativeTTL, NegativeMaxTTL time.Duration
	// ErrorTTL keeps a failed lookup (SERVFAIL, timeout) briefly (RFC 9520),
	// so a broken domain does not cost the full retry budget per message.
	ErrorTTL time.Duration
	// Probe result lifetimes by outcome: accepting longest, timeouts shortest.
	ProbeAcceptTTL, ProbeRefusedTTL, ProbeTimeoutTTL time.Duration
	// Prefetch refreshes an entry asked for in the last quarter of its life
	// in the background, so that a domain in steady use never waits.
	Prefetch bool
}

// expiring is a cached value and when it stops being served.
type expiring[V any] struct {
	value   V
	expires time.Time
	// refreshFrom is when a lookup of it should refresh it in the
	// background (the last quarter of its life), for cache.prefetch.
	refreshFrom time.Time
}

// ttlLRU is an LRU bounded by entry count, and optionally by the size of
// its entries, whose entries each carry their own expiry (golang-lru's
// expirable cache has one TTL for all entries).
type ttlLRU[K comparable, V any] struct {
	lru *lru.Cache[K, expiring[V]]
	now func() time.Time
	// With maxBytes set, sizeOf measures an entry; mu serialises the changes
	// that are not plain hits, so that bytes stays exact.
	maxBytes int64
	sizeOf   func(K, V) int64
	mu       sync.Mutex
	bytes    atomic.Int64
}

func newTTLLRU[K comparable, V any](size int, now func() time.Time) (*ttlLRU[K, V], error) {
	return newSizedLRU[K, V](size, 0, nil, now)
}

// newSizedLRU is a ttlLRU that also evicts, oldest first, while its entries
// take more than maxBytes as sizeOf counts them.
func newSizedLRU[K comparable, V any](size int, maxBytes int64, sizeOf func(K, V) int64, now func() time.Time) (*ttlLRU[K, V], error) {
	c := &ttlLRU[K, V]{now: now, maxBytes: maxBytes, sizeOf: sizeOf}
	var onEvict func(K, expiring[V])
	if maxBytes > 0 {
		onEvict = func(k K, e expiring[V]) { c.bytes.Add(-sizeOf(k, e.value)) }
	}
	l, err := lru.NewWithEvict[K, expiring[V]](size, onEvict)
	if err != nil {
		return nil, fmt.Errorf("cache of %d entries: %w", size, err)
	}
	c.lru = l
	return c, nil
}

func (c *ttlLRU[K, V]) get(k K) (V, bool) {
	v, ok, _ := c.getAging(k)
	return v, ok
}

// getAging is get, and whether the entry is in the last quarter of its life.
func (c *ttlLRU[K, V]) getAging(k K) (V, bool, bool) {
	v, ok, aging, _ := c.getRefreshing(k)
	return v, ok, aging
}

// getRefreshing is getAging, and when the entry's last quarter begins.
func (c *ttlLRU[K, V]) getRefreshing(k K) (V, bool, bool, time.Time) {
	e, ok := c.lru.Get(k)
	if !ok {
		var zero V
		return zero, false, false, time.Time{}
	}
	now := c.now()
	if !now.Before(e.expires) {
		c.mu.Lock()
		if e, ok := c.lru.Peek(k); ok && !c.now().Before(e.expires) {
			c.lru.Remove(k)
		}
		c.mu.Unlock()
		var zero V
		return zero, false, false, time.Time{}
	}
	return e.value, true, !now.Before(e.refreshFrom), e.refreshFrom
}

// has reports whether k is cached and fresh, without touching its recency.
func (c *ttlLRU[K, V]) has(k K) bool {
	e, ok := c.lru.Peek(k)
	return ok && c.now().Before(e.expires)
}

func (c *ttlLRU[K, V]) add(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxBytes <= 0 {
		c.lru.Add(k, c.entry(v, ttl))
		return
	}
	size := c.sizeOf(k, v)
	if size > c.maxBytes {
		return // would evict everything else and still not fit
	}
	c.lru.Remove(k) // an update: its old size goes through onEvict
	c.lru.Add(k, c.entry(v, ttl))
	c.bytes.Add(size)
	for c.bytes.Load() > c.maxBytes && c.lru.Len() > 0 {
		c.lru.RemoveOldest()
	}
}

func (c *ttlLRU[K, V]) entry(v V, ttl time.Duration) expiring[V] {
	now := c.now()
	return expiring[V]{v, now.Add(ttl), now.Add(ttl - ttl/4)}
}

// CacheStats counts cache traffic, for metrics and tests.
type CacheStats struct {
	Hits, Misses uint64
	Entries      int
	// Bytes is what the entries take, where the cache counts it (DNS).
	Bytes int64
}

type dnsKey struct {
	name  string
	qtype uint16
}

func (k dnsKey) String() string { return k.name + "/" + strconv.Itoa(int(k.qtype)) }

// cachedResolver answers from an LRU and collapses concurrent misses for the
// same (name, type) into one upstream lookup.
type cachedResolver struct {
	next    resolver
	cfg     CacheConfig
	budget  time.Duration // deadline of the shared upstream lookup
	lru     *ttlLRU[dnsKey, dnsEntry]
	flight  singleflight.Group
	counter *hitCounter
	shared  *sharedLevel // nil: no fleet cache
}

// dnsEntry is a cached answer, or a cached failure.
type dnsEntry struct {
	ans *dnsAnswer
	err error
}

// entryOverhead approximates what an entry costs beyond its strings and
// slices: the LRU's list element and map slot, the Answer, headers.
const entryOverhead = 256

// dnsEntrySize approximates the memory an entry holds.
func dnsEntrySize(k dnsKey, e dnsEntry) int64 {
	n := entryOverhead + len(k.name)
	if e.err != nil {
		n += len(e.err.Error())
	}
	if a := e.ans; a != nil {
		for _, s := range a.Aliases {
			n += 16 + len(s)
		}
		for _, mx := range a.MX {
			n += 24 + len(mx.Host)
		}
		n += 24 * len(a.Addrs)
		for _, s := range a.Names {
			n += 16 + len(s)
		}
		for _, s := range a.TXT {
			n += 16 + len(s)
		}
	}
	return int64(n)
}

func (c *cachedResolver) Lookup(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	key := dnsKey{canonicalName(name), qtype}
	if e, ok, aging, refreshFrom := c.lru.getRefreshing(key); ok {
		if run := runOf(ctx); run != nil { // counted if the run is kept (warm.go)
			run.readDNS(key, refreshFrom)
		} else {
			c.counter.hit()
		}
		if aging && c.cfg.Prefetch {
			ch := c.flight.DoChan("refresh "+key.String(), func() (any, error) { // in the background
				return c.fetch(ctx, key, false), nil
			})
			if inRefresh(ctx) { // a memo's refresh waits for it (memo.go)
				select {
				case r := <-ch:
					e = r.Val.(dnsEntry) // a failure fails the memo's refresh too
				case <-ctx.Done():
				}
			}
		}
		return e.ans, e.err
	}
	if notCached(ctx) {
		return nil, errNotCached
	}
	c.counter.miss()
	ch := c.flight.DoChan(key.String(), func() (any, error) { return c.fetch(ctx, key, true), nil })
	select {
	case r := <-ch:
		e := r.Val.(dnsEntry)
		return e.ans, e.err
	case <-ctx.Done():
		return nil, &dnsError{Kind: errTimeout, Name: name, Type: qtype, Err: ctx.Err()}
	}
}

// fetch gets key's answer from the fleet cache or from DNS and caches it.
// A miss first looks at the local cache again (a flight that ended after
// the miss may have filled it); a refresh ahead of expiry does not.
func (c *cachedResolver) fetch(ctx context.Context, key dnsKey, miss bool) dnsEntry {
	if miss {
		if e, ok := c.lru.get(key); ok {
			return e
		}
	}
	// The shared lookup runs on its own deadline: a caller that gives up
	// must not fail the other waiters, and the answer still lands in the cache.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.budget)
	defer cancel()
	sk := ""
	if c.shared != nil {
		sk = dnsSharedKey(c.shared.prefix, key)
		if a, ttl, ok := c.shared.dns(lctx, sk); ok && (miss || ttl > c.cfg.MinTTL/4) {
			e := dnsEntry{a, nil}
			c.lru.add(key, e, ttl)
			return e
		}
	}
	a, err := safeLookup(lctx, c.next, key.name, key.qtype)
	e := dnsEntry{a, err}
	if err != nil {
		c.lru.add(key, e, c.cfg.ErrorTTL) // errors stay local: another node may do better
		return e
	}
	ttl := c.ttlFor(a)
	c.lru.add(key, e, ttl)
	if c.shared != nil {
		c.shared.set(sk, encodeDNS(a, c.lru.now().Add(ttl)), ttl)
	}
	return e
}

// cached reports whether a lookup would be answered from the cache.
func (c *cachedResolver) cached(name string, qtype uint16) bool {
	return c.lru.has(dnsKey{canonicalName(name), qtype})
}

func (c *cachedResolver) ttlFor(a *dnsAnswer) time.Duration {
	if a.Kind != kindFound && !a.TTLKnown {
		return c.cfg.NegativeTTL
	}
	return clamp(a.TTL, c.cfg.MinTTL, c.cfg.dnsTTLCap(a))
}

// dnsTTLCap is the longest an answer like a is kept: a positive one
// max_ttl, a negative one negative_max_ttl, or negative_ttl without an SOA.
func (c CacheConfig) dnsTTLCap(a *dnsAnswer) time.Duration {
	switch {
	case a.Kind == kindFound:
		return c.MaxTTL
	case !a.TTLKnown:
		return c.NegativeTTL
	}
	return c.NegativeMaxTTL
}

// safeLookup and safeProbe run the shared work of a flight. singleflight
// re-panics a flight's panic in a goroutine of its own, which would end the
// process: turn a bug met on hostile input into a failed lookup instead.
func safeLookup(ctx context.Context, r resolver, name string, qtype uint16) (a *dnsAnswer, err error) {
	defer func() {
		if v := recover(); v != nil {
			a, err = nil, &dnsError{Kind: errBadResponse, Name: name, Type: qtype, Err: fmt.Errorf("internal error: %v", v)}
		}
	}()
	return r.Lookup(ctx, name, qtype)
}

func safeProbe(ctx context.Context, p prober, ip netip.Addr) (r probeResult) {
	defer func() {
		if v := recover(); v != nil {
			r = probeResult{Outcome: OutcomeAbandoned, Detail: fmt.Sprintf("internal error: %v", v)}
		}
	}()
	return p.Probe(ctx, ip)
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}

// cachedProber remembers probe results per address, for a time that depends
// on the outcome, and collapses concurrent probes of one address.
type cachedProber struct {
	next    prober
	cfg     CacheConfig
	lru     *ttlLRU[netip.Addr, probeResult]
	flight  singleflight.Group
	counter *hitCounter
	shared  *sharedLevel // nil: no fleet cache
	port    uint16       // in the shared key: a probe of another port is another fact
	// lockFor is how long one probe can take: the fleet lock's lifetime,
	// and the longest another node waits for its result.
	lockFor time.Duration
}

func (c *cachedProber) Probe(ctx context.Context, ip netip.Addr) probeResult {
	if r, ok, aging, refreshFrom := c.lru.getRefreshing(ip); ok {
		if run := runOf(ctx); run != nil { // counted if the run is kept (warm.go)
			run.readProbe(ip, refreshFrom)
		} else {
			c.counter.hit()
		}
		if aging && c.cfg.Prefetch {
			c.flight.DoChan("refresh "+ip.String(), func() (any, error) { // in the background
				c.fetch(ctx, ip, false)
				return nil, nil
			})
		}
		return r
	}
	if notCached(ctx) {
		return probeResult{Outcome: OutcomeAbandoned, Detail: errNotCached.Error()}
	}
	c.counter.miss()
	ch := c.flight.DoChan(ip.String(), func() (any, error) { return c.fetch(ctx, ip, true), nil })
	select {
	case r := <-ch:
		return r.Val.(probeResult)
	case <-ctx.Done():
		return probeResult{Outcome: OutcomeAbandoned, Detail: "decision deadline reached before the probe finished"}
	}
}

// fetch gets ip's probe result from the fleet cache, or probes it and
// caches the result. Across the fleet one node probes an address at a time:
// it takes the address's lock; the others wait for its result, within the
// deadline of the decision that asked and the lock's life, then probe
// themselves rather than wait longer.
func (c *cachedProber) fetch(ctx context.Context, ip netip.Addr, miss bool) probeResult {
	if miss {
		if r, ok := c.lru.get(ip); ok {
			return r
		}
	}
	wctx := context.WithoutCancel(ctx) // bounded by the prober's own timeouts
	sk := ""
	if c.shared != nil {
		sk = probeSharedKey(c.shared.prefix, c.port, ip)
		if r, ttl, ok := c.shared.probe(wctx, sk); ok && (miss || ttl > c.cfg.ProbeTimeoutTTL/4) {
			c.lru.add(ip, r, ttl)
			return r
		}
		unlock, mine := c.shared.cache.Lock(wctx, c.shared.prefix+"lock:"+sk, c.lockFor)
		if !mine {
			deadline := time.Now().Add(c.lockFor)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
			if r, ttl, ok := c.shared.awaitProbe(wctx, sk, deadline); ok {
				c.lru.add(ip, r, ttl)
				return r
			}
		} else {
			defer unlock() // after the result is written below
		}
	}
	r := safeProbe(wctx, c.next, ip)
	ttl := c.cfg.probeTTL(r.Outcome)
	c.lru.add(ip, r, ttl)
	if c.shared != nil && ttl > 0 {
		c.shared.set(sk, encodeProbe(r, c.lru.now().Add(ttl)), ttl)
	}
	return r
}

// cached reports whether a probe would be answered from the cache.
func (c *cachedProber) cached(ip netip.Addr) bool { return c.lru.has(ip) }

// probeTTL is how long a probe outcome is kept.
func (c CacheConfig) probeTTL(o Outcome) time.Duration {
	switch o {
	case OutcomeAccept, OutcomeSMTPRefusal:
		return c.ProbeAcceptTTL
	case OutcomeRefused, OutcomeNotSMTP:
		return c.ProbeRefusedTTL
	case OutcomeNotAllowed, OutcomeAbandoned:
		return 0 // a policy or load answer, not a fact about the host
	}
	return c.ProbeTimeoutTTL
}

// hitCounter counts cache traffic and tells the observer.
type hitCounter struct {
	hits, misses atomic.Uint64
	observer     Observer
	cache        string
}

func (h *hitCounter) count(hit bool) {
	if hit {
		h.hit()
	} else {
		h.miss()
	}
}

func (h *hitCounter) hit() {
	h.hits.Add(1)
	h.observer.CacheLookup(h.cache, true)
}

func (h *hitCounter) miss() {
	h.misses.Add(1)
	h.observer.CacheLookup(h.cache, false)
}
