package policy

import (
	"context"
	"fmt"
)

// memo is a check's memory of what it works out from DNS answers alone (an
// SPF evaluation, a DMARC discovery). The DNS cache keeps those answers at
// least cache.min_ttl: remembered as long, a warm decision does not parse
// records again. A check opts in by naming its memo in its descriptor; the
// engine keeps one store per memo, and a reload keeps it with the DNS cache.
type memo struct {
	// sameInputs, when set, says whether two configurations give the same
	// values from the same DNS answers; a reload keeps the memory only then.
	sameInputs func(prev, next Config) bool
}

// memoStores builds an empty store for the memo of every check that has one.
func memoStores(cfg Config) (map[*memo]*ttlLRU[any, any], error) {
	stores := map[*memo]*ttlLRU[any, any]{}
	for _, c := range checks {
		if c.memo == nil {
			continue
		}
		s, err := newTTLLRU[any, any](max(cfg.Cache.DNSEntries/8, 128), cfg.Clock)
		if err != nil {
			return nil, fmt.Errorf("%s %w", c.id, err)
		}
		stores[c.memo] = s
	}
	return stores, nil
}

// recall returns what work gives for key, remembered in m for
// cache.min_ttl, or cache.error_ttl when work says it is a temperror. What
// work gives after ctx ended is not kept: an answer cut short by the
// deadline is not the domain's.
func recall[K comparable, V any](ctx context.Context, ev *evaluation, m *memo, key K, work func() (v V, temperror bool)) V {
	store := ev.e.memos[m]
	if v, ok := store.get(key); ok {
		return v.(V)
	}
	v, temp := work()
	ttl := ev.e.cfg.Cache.MinTTL
	if temp {
		ttl = ev.e.cfg.Cache.ErrorTTL
	}
	if ctx.Err() == nil {
		store.add(key, v, ttl)
	}
	return v
}
