package policy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
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
// run's *cacheOnlyRun: a lookup, probe or memo that is not cached records
// the miss there and returns at once instead of asking the network.
type cacheOnlyKey struct{}

// cacheOnlyRun is what a cache-only run learns besides its facts.
type cacheOnlyRun struct {
	missed atomic.Bool
	// volatile: it read state that no cache entry holds, and that may
	// change before its entries age (the egress state, check_mx_port25.go).
	volatile atomic.Bool
	// until is the earliest time, in Unix nanoseconds, at which an entry
	// it read should be refreshed (its last quarter of life): the report
	// can stand for the entries as long as none is due.
	until atomic.Int64
}

func runOf(ctx context.Context) *cacheOnlyRun {
	run, _ := ctx.Value(cacheOnlyKey{}).(*cacheOnlyRun)
	return run
}

// errNotCached stands in for an answer a cache-only run did not find; the
// run is discarded, so no check ever reports it.
var errNotCached = errors.New("not cached")

// notCached reports whether ctx is a cache-only run, recording the miss.
func notCached(ctx context.Context) bool {
	run := runOf(ctx)
	if run == nil {
		return false
	}
	run.missed.Store(true)
	return true
}

// cacheOnly reports whether ctx is a cache-only run.
func cacheOnly(ctx context.Context) bool { return runOf(ctx) != nil }

// readEntry notes, in a cache-only run, a cache entry read that is due for
// refresh at refreshFrom.
func readEntry(ctx context.Context, refreshFrom time.Time) {
	run := runOf(ctx)
	if run == nil {
		return
	}
	t := refreshFrom.UnixNano()
	for {
		was := run.until.Load()
		if was != 0 && was <= t || run.until.CompareAndSwap(was, t) {
			return
		}
	}
}

// readVolatile notes, in a cache-only run, a read of state no cache holds.
func readVolatile(ctx context.Context) {
	if run := runOf(ctx); run != nil {
		run.volatile.Store(true)
	}
}

// reportKey is what a report depends on besides the caches, the engine's
// configuration and the egress state.
type reportKey struct {
	sender, domain, helo, messageSkip string
	client                            netip.Addr
	authenticated                     bool
}

func reportKeyOf(req Request) reportKey {
	return reportKey{req.Sender, req.Domain, req.HELO, req.MessageSkip, req.ClientIP, req.AuthUser != ""}
}

// reportSize is about what a remembered report takes: its key, its
// results and their strings.
func reportSize(k reportKey, r *Report) int64 {
	n := 256 + len(k.sender) + len(k.domain) + len(k.helo) + len(k.messageSkip) + len(r.Domain)
	for _, c := range r.Checks {
		n += 144 + len(c.ID) + len(c.Detail) + len(c.Host) + len(c.Enhanced) + len(c.fix)
	}
	return int64(n)
}

// clone is a copy of r that its caller may change.
func (r *Report) clone(began time.Time) *Report {
	c := *r
	c.Checks = slices.Clone(r.Checks)
	c.Elapsed = time.Since(began)
	return &c
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
//
// The report is remembered until the first entry it was made from is due
// for refresh: the same request is then answered with it, checks not run
// again (and cache hits not counted), as long as no entry it read can
// have changed; after that, the checks run and refresh what is due.
func (e *Engine) evaluateWarm(ctx context.Context, req Request, began time.Time) (rep *Report) {
	if ctx.Err() != nil {
		return nil
	}
	key := reportKeyOf(req)
	if !req.self {
		r, ok := e.reports.get(key)
		e.cfg.Observer.CacheLookup("report", ok)
		if ok {
			return r.clone(began)
		}
	}
	state := &cacheOnlyRun{}
	run := context.WithValue(ctx, cacheOnlyKey{}, state)
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
		if state.missed.Load() {
			return nil
		}
	}
	rep = e.report(ev, req, results, finished, "", began)
	if until := time.Unix(0, state.until.Load()); !req.self && !state.volatile.Load() && state.until.Load() != 0 {
		e.reports.add(key, rep, until.Sub(e.reports.now()))
		return rep.clone(began)
	}
	return rep
}
