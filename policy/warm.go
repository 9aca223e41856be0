package policy

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Most decisions find every fact they need in the caches. Run in
// goroutines, such a decision spends more on starting them, growing their
// stacks and waking threads for their hand-offs than on its checks
// (docs/BENCHMARKS.md): so Evaluate first runs the checks one after the
// other in the caller's goroutine, from the caches alone, and starts the
// chains only when that meets something not cached.

// cacheOnlyKey marks the context of that first run. Its value is the
// *atomic.Bool a lookup, probe or memo sets when it is not cached, and
// returns at once instead of asking the network.
type cacheOnlyKey struct{}

// errNotCached stands in for an answer a cache-only run did not find; the
// run is discarded, so no check ever reports it.
var errNotCached = errors.New("not cached")

// notCached reports whether ctx is a cache-only run, recording the miss.
func notCached(ctx context.Context) bool {
	missed, _ := ctx.Value(cacheOnlyKey{}).(*atomic.Bool)
	if missed == nil {
		return false
	}
	missed.Store(true)
	return true
}

// cacheOnly reports whether ctx is a cache-only run.
func cacheOnly(ctx context.Context) bool {
	missed, _ := ctx.Value(cacheOnlyKey{}).(*atomic.Bool)
	return missed != nil
}

// EvaluateCached is Evaluate from the caches alone: the report, or nil
// when a fact it needs is not cached. It never waits, so a front end can
// call it where it must not block, and call Evaluate in a goroutine of its
// own only when it returns nil.
func (e *Engine) EvaluateCached(ctx context.Context, req Request) *Report {
	return e.evaluateWarm(ctx, req, time.Now())
}

// evaluateWarm runs req's checks in order in this goroutine, from the
// caches. It returns nil when something was not cached or a check
// panicked: Evaluate then runs them in its chains, which ask the network
// and report a panic. What a discarded run looked up is cached, and its
// hits are counted in the cache metrics: they were answered from the cache.
func (e *Engine) evaluateWarm(ctx context.Context, req Request, began time.Time) (rep *Report) {
	if ctx.Err() != nil {
		return nil
	}
	var missed atomic.Bool
	run := context.WithValue(ctx, cacheOnlyKey{}, &missed)
	ev := newEvaluation(e, req)
	results := make([]Result, len(e.checks))
	finished := make([]bool, len(e.checks))
	defer func() {
		if recover() != nil {
			rep = nil
		}
	}()
	for i, c := range e.checks {
		if c.chain == chainMessage {
			continue
		}
		results[i], finished[i] = e.runCheck(run, ev, i), true
		if missed.Load() {
			return nil
		}
	}
	return e.report(ev, req, results, finished, "", began)
}
