package policy

import (
	"context"
	"fmt"
	"sync"
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

// memoRefreshes bounds the refreshes of one memo in flight at once: past
// it, an aging value is served and not refreshed, and a later decision
// asks again.
const memoRefreshes = 16

// memoStore is one memo's values, and the keys being refreshed.
type memoStore struct {
	lru        *ttlLRU[any, any]
	mu         sync.Mutex
	refreshing map[any]struct{}
}

func newMemoStore(size int, cfg Config) (*memoStore, error) {
	lru, err := newTTLLRU[any, any](size, cfg.Clock)
	if err != nil {
		return nil, err
	}
	return &memoStore{lru: lru, refreshing: map[any]struct{}{}}, nil
}

// memoStores builds an empty store for the memo of every check that has one.
func memoStores(cfg Config) (map[*memo]*memoStore, error) {
	stores := map[*memo]*memoStore{}
	for _, c := range checks {
		if c.memo == nil {
			continue
		}
		s, err := newMemoStore(max(cfg.Cache.DNSEntries/8, 128), cfg)
		if err != nil {
			return nil, fmt.Errorf("%s %w", c.id, err)
		}
		stores[c.memo] = s
	}
	return stores, nil
}

// recall returns what work gives for key, remembered in m for
// cache.min_ttl, or cache.error_ttl when work says it is a temperror. What
// work gives after its context ended is not kept: an answer cut short by
// the deadline is not the domain's.
//
// With cache.prefetch, a value asked for in the last quarter of its life is
// worked out again in the background, as the DNS cache refreshes answers
// (cache.go), so that a domain in steady use never waits: the decision
// gets the value it has.
func recall[K comparable, V any](ctx context.Context, ev *evaluation, m *memo, key K, work func(context.Context) (v V, temperror bool)) V {
	store := ev.e.memos[m]
	if v, ok, aging, refreshFrom := store.lru.getRefreshing(key); ok {
		if run := runOf(ctx); run != nil {
			run.readMemo(store, key, refreshFrom)
		}
		if aging && ev.e.cfg.Cache.Prefetch {
			store.refresh(ctx, ev.e, key, func(ctx context.Context) (any, bool) { return work(ctx) })
		}
		return v.(V)
	}
	if notCached(ctx) {
		var none V
		return none
	}
	v, temp := work(ctx)
	ttl := ev.e.cfg.Cache.MinTTL
	if temp {
		ttl = ev.e.cfg.Cache.ErrorTTL
	}
	if ctx.Err() == nil {
		store.lru.add(key, v, ttl)
	}
	return v
}

// refreshKey marks the context of a memo's refresh: its lookups wait for
// the refresh of an aging DNS answer (cachedResolver.Lookup), so that the
// value is worked out from the new answers, and lives as long as they do.
type refreshKey struct{}

// refresh works key's value out again in the background, unless it is
// already being refreshed or memoRefreshes are. A refresh that fails (a
// temperror, the budget ran out, a panic) leaves the value there is until
// it expires.
func (s *memoStore) refresh(ctx context.Context, e *Engine, key any, work func(context.Context) (any, bool)) {
	s.mu.Lock()
	_, busy := s.refreshing[key]
	if busy || len(s.refreshing) >= memoRefreshes {
		s.mu.Unlock()
		return
	}
	s.refreshing[key] = struct{}{}
	s.mu.Unlock()
	go func() {
		defer func() {
			recover() // a bug met on hostile input: the decision that misses meets it too, and reports it
			s.mu.Lock()
			delete(s.refreshing, key)
			s.mu.Unlock()
		}()
		rctx, cancel := outliving(ctx, e.budget)
		defer cancel()
		rctx = context.WithValue(rctx, refreshKey{}, true)
		if v, temp := work(rctx); !temp && rctx.Err() == nil {
			s.lru.add(key, v, e.cfg.Cache.MinTTL)
		}
	}()
}

// inRefresh reports whether ctx is a memo's refresh.
func inRefresh(ctx context.Context) bool { return ctx.Value(refreshKey{}) != nil }
