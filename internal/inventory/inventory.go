package inventory

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// Store keeps entries: Local on one host, Redis for a fleet.
type Store interface {
	// Apply records sightings and returns the verdict changes they made.
	Apply(ctx context.Context, batch []Sighting) ([]Notice, error)
	// Get returns a domain's entry; nil when it was never seen.
	Get(ctx context.Context, domain string) (*Entry, error)
	// List returns the entries a query selects, newest change first, and
	// the cursor of the next page ("" after the last).
	List(ctx context.Context, q Query) ([]*Entry, string, error)
	// Domains calls fn for every domain seen since a time.
	Domains(ctx context.Context, since time.Time, fn func(domain string) error) error
	// Counts returns the number of domains by verdict.
	Counts(ctx context.Context) (map[string]int, error)
	// CheckCounts returns the number of domains with a non-pass finding of
	// each of the given checks.
	CheckCounts(ctx context.Context, checks []string) (map[string]int, error)
	Close() error
}

// Options tune the writer.
type Options struct {
	// Queue bounds the decisions waiting to be written; beyond it they are
	// dropped (and counted): mail never waits for the inventory.
	Queue int
	// FlushEvery is how often queued decisions are written, in one batch.
	FlushEvery time.Duration
	// SaveEvery is how often a Local store is written to its file.
	SaveEvery time.Duration
	// Notify is given every verdict change a batch made (a webhook).
	Notify func([]Notice)
	Log    *slog.Logger
}

// Inventory queues the decisions of the mail front ends and writes them to
// a store in batches.
type Inventory struct {
	store   Store
	opts    Options
	queue   chan Sighting
	dropped atomic.Uint64
	failed  atomic.Uint64
	counts  atomic.Pointer[map[string]int]
	flushMu sync.Mutex
	stop    chan struct{}
	done    chan struct{}
}

// New starts writing to store.
func New(store Store, opts Options) *Inventory {
	if opts.Queue <= 0 {
		opts.Queue = 8192
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = time.Second
	}
	if opts.SaveEvery <= 0 {
		opts.SaveEvery = 5 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	inv := &Inventory{store: store, opts: opts, queue: make(chan Sighting, opts.Queue),
		stop: make(chan struct{}), done: make(chan struct{})}
	inv.refreshCounts()
	go inv.run()
	return inv
}

// Store is where the inventory is kept; nil without an inventory.
func (inv *Inventory) Store() Store {
	if inv == nil {
		return nil
	}
	return inv.store
}

// Record queues a decision; it never blocks.
func (inv *Inventory) Record(r *policy.Report) {
	if inv == nil {
		return
	}
	s, ok := FromReport(r, time.Now())
	if !ok {
		return
	}
	select {
	case inv.queue <- s:
	default:
		inv.dropped.Add(1)
	}
}

// Dropped counts decisions not recorded because the queue was full;
// Failed those whose batch the store refused.
func (inv *Inventory) Dropped() uint64 { return inv.dropped.Load() }
func (inv *Inventory) Failed() uint64  { return inv.failed.Load() }

// Counts is the number of domains by verdict, as of the last write.
func (inv *Inventory) Counts() map[string]int {
	if c := inv.counts.Load(); c != nil {
		return *c
	}
	return nil
}

// maxBatch bounds the domains written at once.
const maxBatch = 4096

func (inv *Inventory) run() {
	defer close(inv.done)
	flush := time.NewTicker(inv.opts.FlushEvery)
	defer flush.Stop()
	save := time.NewTicker(inv.opts.SaveEvery)
	defer save.Stop()
	pending := map[string]Sighting{}
	for {
		select {
		case s := <-inv.queue:
			merge(pending, s)
			if len(pending) >= maxBatch {
				inv.write(pending)
				pending = map[string]Sighting{}
			}
		case <-flush.C:
			inv.write(pending)
			pending = map[string]Sighting{}
			inv.takeJournal()
		case <-save.C:
			inv.save()
		case <-inv.stop:
			for len(inv.queue) > 0 {
				merge(pending, <-inv.queue)
			}
			inv.write(pending)
			inv.takeJournal()
			return
		}
	}
}

// merge folds a decision into the batch: one sighting per domain, with
// the messages added up and the latest verdict.
func merge(pending map[string]Sighting, s Sighting) {
	p, ok := pending[s.Domain]
	if !ok {
		pending[s.Domain] = s
		return
	}
	p.Messages += s.Messages
	if !s.At.Before(p.At) && s.Verdict != "" {
		p.At, p.Verdict, p.Findings = s.At, s.Verdict, s.Findings
	}
	pending[s.Domain] = p
}

func (inv *Inventory) write(pending map[string]Sighting) {
	if len(pending) == 0 {
		return
	}
	batch := make([]Sighting, 0, len(pending))
	for _, s := range pending {
		batch = append(batch, s)
	}
	if _, err := inv.Apply(context.Background(), batch); err != nil {
		inv.failed.Add(uint64(len(batch)))
		inv.opts.Log.Warn("the inventory could not record a batch; mail is not affected", "domains", len(batch), "error", err)
	}
}

// Apply writes a batch now (the audit's results), notifies its changes and
// refreshes the counts.
func (inv *Inventory) Apply(ctx context.Context, batch []Sighting) ([]Notice, error) {
	inv.flushMu.Lock()
	defer inv.flushMu.Unlock()
	notices, err := inv.store.Apply(ctx, batch)
	if len(notices) > 0 && inv.opts.Notify != nil {
		inv.opts.Notify(notices)
	}
	inv.refreshCounts()
	return notices, err
}

func (inv *Inventory) refreshCounts() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := inv.store.Counts(ctx); err == nil {
		inv.counts.Store(&c)
	}
}

func (inv *Inventory) takeJournal() {
	l, ok := inv.store.(*Local)
	if !ok {
		return
	}
	inv.flushMu.Lock()
	notices, bad, err := l.TakeJournal(context.Background())
	inv.flushMu.Unlock()
	if err != nil {
		inv.opts.Log.Warn("the inventory journal could not be applied", "error", err)
	}
	if bad > 0 {
		inv.opts.Log.Warn("skipped damaged lines of the inventory journal", "lines", bad)
	}
	if len(notices) > 0 && inv.opts.Notify != nil {
		inv.opts.Notify(notices)
	}
	if len(notices) > 0 || bad > 0 {
		inv.refreshCounts()
	}
}

func (inv *Inventory) save() {
	if l, ok := inv.store.(*Local); ok {
		if err := l.Save(); err != nil {
			inv.opts.Log.Warn("the inventory could not be saved; will try again", "error", err)
		}
	}
}

// Close writes what is queued, saves and closes the store.
func (inv *Inventory) Close() error {
	close(inv.stop)
	<-inv.done
	return inv.store.Close()
}
