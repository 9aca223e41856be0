package policy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
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

// cacheOnlyRun is what a cache-only run learns besides its facts. An
// evaluation's run is one goroutine's (its fan-outs run in order); a
// message's verifier looks its keys up from a goroutine per signature.
type cacheOnlyRun struct {
	missed atomic.Bool
	// volatile: it read state that no cache entry holds, and that may
	// change before its entries age (the egress state, check_mx_port25.go).
	volatile atomic.Bool
	mu       sync.Mutex // for until and read
	// until is the earliest time at which an entry it read should be
	// refreshed (its last quarter of life): the report can stand for the
	// entries as long as none is due.
	until time.Time
	// The entries it read. They count as cache hits only if the run is
	// kept (a run that missed is run again, and counted, by the chains),
	// and a remembered report keeps them recently used, as a decision
	// that reads them would.
	read entriesRead
}

// entriesRead are the keys of the cache entries a decision read.
type entriesRead struct {
	dns    []dnsKey
	probes []netip.Addr
	memos  []memoRead
}

type memoRead struct {
	store *memoStore
	key   any
}

// count counts the DNS and probe entries read as hits of their caches.
func (r *entriesRead) count(e *Engine) {
	for range r.dns {
		e.resolver.counter.hit()
	}
	for range r.probes {
		e.prober.counter.hit()
	}
}

// touch makes the entries read the most recently used of their caches.
func (r *entriesRead) touch(e *Engine) {
	for _, k := range r.dns {
		e.resolver.lru.lru.Get(k)
	}
	for _, ip := range r.probes {
		e.prober.lru.lru.Get(ip)
	}
	for _, m := range r.memos {
		m.store.lru.lru.Get(m.key)
	}
}

// remembered is a report kept for its request, and what it was made from.
type remembered struct {
	report *Report
	read   entriesRead
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

// readDNS, readProbe and readMemo note a cache entry read, due for
// refresh at refreshFrom.
func (run *cacheOnlyRun) readDNS(k dnsKey, refreshFrom time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	run.read.dns = append(run.read.dns, k)
	run.due(refreshFrom)
}

func (run *cacheOnlyRun) readProbe(ip netip.Addr, refreshFrom time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	run.read.probes = append(run.read.probes, ip)
	run.due(refreshFrom)
}

func (run *cacheOnlyRun) readMemo(store *memoStore, key any, refreshFrom time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	run.read.memos = append(run.read.memos, memoRead{store, key})
	run.due(refreshFrom)
}

// due keeps the earliest refreshFrom in until; mu is held.
func (run *cacheOnlyRun) due(refreshFrom time.Time) {
	if run.until.IsZero() || refreshFrom.Before(run.until) {
		run.until = refreshFrom
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
func reportSize(k reportKey, m *remembered) int64 {
	r := m.report
	n := 256 + len(k.sender) + len(k.domain) + len(k.helo) + len(k.messageSkip) + len(r.Domain) +
		48*len(m.read.dns) + 24*len(m.read.probes) + 32*len(m.read.memos)
	for _, k := range m.read.dns {
		n += len(k.name)
	}
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
// call it where it must not block, and call EvaluateCold in a goroutine
// of its own only when it returns nil.
func (e *Engine) EvaluateCached(ctx context.Context, req Request) *Report {
	return e.evaluateWarm(ctx, req, time.Now())
}

// EvaluateCold is Evaluate without its run from the caches alone, for a
// request EvaluateCached has just found not cached: the chains at once.
func (e *Engine) EvaluateCold(ctx context.Context, req Request) *Report {
	return e.evaluateChains(ctx, req, time.Now())
}

// evaluateWarm runs req's checks in order in this goroutine, from the
// caches. It returns nil when something was not cached or a check
// panicked: Evaluate then runs them in its chains, which ask the network
// and report a panic. A discarded run counts no cache hit: the chains
// count the entries they read again.
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
			r.read.touch(e)
			return r.report.clone(began)
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
	state.read.count(e)
	rep = e.report(ev, req, results, finished, "", began)
	if !req.self && !state.volatile.Load() && !state.until.IsZero() {
		e.reports.add(key, &remembered{rep, state.read}, state.until.Sub(e.reports.now()))
		return rep.clone(began)
	}
	return rep
}
