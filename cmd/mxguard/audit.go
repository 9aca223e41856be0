package main

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/internal/notify"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/policy"
)

const auditUsage = `Usage: mxguard audit [--config FILE] [--inventory | --file FILE] [--since DURATION] [--json|--csv] [--concurrency N]

Checks again every domain of the inventory (inventory.path, or the fleet's
with cache.shared.url), or of a file (one domain or address per line), with
the same engine as serve, and prints each one's verdict and what changed
since its last audit: new, newly-failing, fixed, still-failing (since when)
or unchanged. The results are stored in the inventory, so the next audit is
relative to this one; a verdict change is sent to notify.webhook.
Exit status as for check: 0 pass, 1 flag/hold, 2 defer/reject, 3 only
temporary errors, 64 usage or configuration error; the worst of them.

Flags:
`

type auditOptions struct {
	configFile  string
	inventory   bool
	file        string
	since       time.Duration
	jsonOut     bool
	csvOut      bool
	concurrency int
}

// auditFlagSet is the flag set of `mxguard audit`, parsed into o.
func auditFlagSet(o *auditOptions, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage); fs.PrintDefaults() }
	fs.StringVar(&o.configFile, "config", "", "configuration `FILE` (default: the built-in configs/mxguard.yaml)")
	fs.BoolVar(&o.inventory, "inventory", false, "audit the inventory's domains (the default)")
	fs.StringVar(&o.file, "file", "", "audit the domains or addresses of `FILE`, one per line (\"-\": stdin)")
	fs.DurationVar(&o.since, "since", 0, "with the inventory: only domains seen in the last `DURATION` (e.g. 24h)")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object per domain per line")
	fs.BoolVar(&o.csvOut, "csv", false, "print CSV: one row per domain and finding, with the fix")
	fs.IntVar(&o.concurrency, "concurrency", 0, "domains checked at once (default: inventory.audit_concurrency)")
	return fs
}

func runAudit(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o auditOptions
	fs := auditFlagSet(&o, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	switch {
	case fs.NArg() > 0:
		return usageError(stderr, fmt.Errorf("audit takes no arguments, got %q: use --file for a list", fs.Args()))
	case o.inventory && o.file != "":
		return usageError(stderr, errors.New("--inventory and --file: choose one"))
	case o.jsonOut && o.csvOut:
		return usageError(stderr, errors.New("--json and --csv: choose one"))
	case o.since < 0 || o.since > 0 && o.file != "":
		return usageError(stderr, errors.New("--since takes a positive duration, and only with the inventory"))
	case o.concurrency < 0:
		return usageError(stderr, errors.New("--concurrency must be at least 1"))
	}
	cfg, err := loadConfig(o.configFile)
	if err != nil {
		return usageError(stderr, err)
	}
	pc := cfg.Engine()
	pc.Probe.MaxQueued, pc.Probe.QueueTimeout = math.MaxInt32, 24*time.Hour // as check: every answer, however long
	engine, err := policy.New(pc)
	if err != nil {
		return usageError(stderr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := openAuditStore(ctx, cfg, log)
	if err != nil {
		return usageError(stderr, err)
	}
	defer st.close()

	var domains []string
	if o.file != "" {
		in := stdin
		if o.file != "-" {
			f, err := os.Open(o.file)
			if err != nil {
				return usageError(stderr, err)
			}
			defer f.Close()
			in = f
		}
		if domains, err = readDomains(in, stderr); err != nil {
			return usageError(stderr, err)
		}
	} else {
		var since time.Time
		if o.since > 0 {
			since = time.Now().Add(-o.since)
		}
		if err := st.store.Domains(ctx, since, func(d string) error { domains = append(domains, d); return nil }); err != nil {
			return usageError(stderr, fmt.Errorf("reading the inventory: %w", err))
		}
	}
	out := newAuditPrinter(engine, stdout, o)
	bar := newProgressOf(len(domains), stdout, stderr)
	worst := exitPass
	changes := map[string]int{}
	n := cmp.Or(o.concurrency, cfg.Inventory.AuditConcurrency)
	err = auditDomains(ctx, engine, st.store, domains, n, st.apply, func(a auditResult) {
		_, code := outcome(engine, a.report)
		worst = worse(worst, code)
		changes[a.change]++
		out.print(a)
		bar.done()
	})
	out.flush()
	bar.finish(len(domains))
	fmt.Fprintf(stderr, "audited %d domains: %d new, %d newly-failing, %d fixed, %d still-failing, %d unchanged\n",
		len(domains), changes["new"], changes["newly-failing"], changes["fixed"], changes["still-failing"], changes["unchanged"])
	if err != nil {
		fmt.Fprintf(stderr, "mxguard audit: %v\n", err)
		return exitUsage
	}
	return worst
}

// readDomains reads a --file list with check's line rule; a line that
// names no valid domain is reported with its number and skipped.
func readDomains(in io.Reader, stderr io.Writer) ([]string, error) {
	var domains []string
	sc := newTargetScanner(in)
	for n := 1; sc.Scan(); n++ {
		line, ok := target(sc.Text())
		if !ok {
			continue
		}
		parsed := policy.ParseDomain(line)
		if strings.ContainsAny(line, "@<") {
			parsed = policy.ParseSender(line)
		}
		if parsed.Err != nil || parsed.Null || parsed.Unqualified {
			fmt.Fprintf(stderr, "line %d: %s is not a domain or an address with one; skipped\n", n, strconv.Quote(policy.Printable(line, 80)))
			continue
		}
		domains = append(domains, parsed.Domain)
	}
	return domains, sc.Err()
}

// auditStore is where an audit reads the inventory and stores its results.
type auditStore struct {
	store inventory.Store
	apply func(context.Context, []inventory.Sighting) error
	close func()
}

// openAuditStore opens the fleet's inventory, or this host's. When a
// running serve owns this host's file, the results go to its journal and
// serve applies (and notifies) them.
func openAuditStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (*auditStore, error) {
	var hook *notify.Webhook
	if w := cfg.Notify.Webhook; w.URL != "" {
		var err error
		if hook, err = startWebhook(cfg, log, nil); err != nil {
			return nil, err
		}
	}
	send := func(ns []inventory.Notice) {
		if hook != nil {
			hook.Send(ns)
		}
	}
	flush := func() {
		if hook != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Notify.Webhook.Timeout.D*time.Duration(cfg.Notify.Webhook.Retries+1))
			hook.Flush(ctx)
			cancel()
			hook.Close()
		}
	}
	if url := cfg.Cache.Shared.URL; url != "" {
		shared, err := sharedcache.New(url, cfg.Cache.Shared.Timeout.D, log)
		if err != nil {
			return nil, err
		}
		if err := waitConnected(ctx, shared, 10*time.Second); err != nil {
			shared.Close()
			return nil, err
		}
		st := inventory.NewRedis(shared.Client, cfg.Cache.Shared.Prefix, cfg.Inventory.MaxDomains, 10*time.Second)
		return &auditStore{store: st, close: func() { flush(); shared.Close() }, apply: func(ctx context.Context, b []inventory.Sighting) error {
			ns, err := st.Apply(ctx, b)
			send(ns)
			return err
		}}, nil
	}
	path := cfg.Inventory.Path
	l, err := inventory.OpenLocal(path, cfg.Inventory.MaxDomains, cfg.Inventory.MaxBytes, true, log)
	if errors.Is(err, inventory.ErrOwned) {
		if l, err = inventory.OpenLocal(path, cfg.Inventory.MaxDomains, cfg.Inventory.MaxBytes, false, log); err != nil {
			return nil, err
		}
		flush() // serve notifies what the journal changes
		return &auditStore{store: l, close: func() {}, apply: func(_ context.Context, b []inventory.Sighting) error {
			return inventory.AppendJournal(path, b)
		}}, nil
	}
	if err != nil {
		return nil, err
	}
	return &auditStore{store: l, close: func() {
		flush()
		if err := l.Close(); err != nil {
			log.Error("saving the inventory failed", "error", err)
		}
	}, apply: func(ctx context.Context, b []inventory.Sighting) error {
		ns, err := l.Apply(ctx, b)
		send(ns)
		return err
	}}, nil
}

func waitConnected(ctx context.Context, shared *sharedcache.Redis, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for shared.Client() == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("cache.shared.url: the fleet's server is not reachable within %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// auditResult is one domain audited.
type auditResult struct {
	report       *policy.Report
	at           time.Time
	change       string
	failingSince time.Time
}

// auditBatch is how many results are stored at once.
const auditBatch = 500

// auditDomains checks domains with n workers, calls each with the results
// in input order, and stores them with apply. serve's periodic audit and
// mxguard audit both run it.
func auditDomains(ctx context.Context, engine *policy.Engine, store inventory.Store, domains []string, n int,
	apply func(context.Context, []inventory.Sighting) error, each func(auditResult)) error {
	type job struct {
		domain string
		done   chan auditResult
	}
	jobs := make(chan job)
	queue := make(chan job, n)
	var wg sync.WaitGroup
	for range max(n, 1) {
		wg.Go(func() {
			for j := range jobs {
				j.done <- auditOne(ctx, engine, store, j.domain)
			}
		})
	}
	go func() {
		defer close(queue)
		defer close(jobs)
		for _, d := range domains {
			j := job{domain: d, done: make(chan auditResult, 1)}
			select {
			case queue <- j:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	var batch []inventory.Sighting
	var storeErr error
	store1 := func() {
		if len(batch) > 0 && storeErr == nil {
			storeErr = apply(context.WithoutCancel(ctx), batch)
		}
		batch = batch[:0]
	}
	for j := range queue {
		select {
		case a := <-j.done:
			each(a)
			if !a.report.Incomplete {
				batch = append(batch, inventory.Sighting{Domain: a.report.Domain, At: a.at, Verdict: a.report.Verdict().String(),
					Findings: findingsOf(a.report), Audit: true})
			}
		case <-ctx.Done():
		}
		if len(batch) >= auditBatch {
			store1()
		}
	}
	wg.Wait()
	store1()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if storeErr != nil {
		return fmt.Errorf("storing the results in the inventory: %w", storeErr)
	}
	return nil
}

func findingsOf(r *policy.Report) []inventory.Finding {
	s, _ := inventory.FromReport(r, time.Now())
	return s.Findings
}

// auditOne checks a domain and says what changed since its last audit.
func auditOne(ctx context.Context, engine *policy.Engine, store inventory.Store, domain string) auditResult {
	before, _ := store.Get(ctx, domain) // unknown (or unreadable) is new
	r := engine.Evaluate(ctx, policy.Request{Domain: domain})
	a := auditResult{report: r, at: time.Now(), change: inventory.AuditChange(before, r.Verdict().String())}
	if inventory.Failing(r.Verdict().String()) {
		a.failingSince = a.at
		if before != nil && before.Failing() && !before.FailingSince.IsZero() {
			a.failingSince = before.FailingSince
		}
	}
	return a
}

// auditJSON is a line of --json: check --json's object, the change and
// since when the domain fails ("" while it passes).
type auditJSON struct {
	checkapi.Report
	Change       string `json:"change"`
	FailingSince string `json:"failing_since"`
}

type auditPrinter struct {
	engine *policy.Engine
	w      io.Writer
	o      auditOptions
	enc    *json.Encoder
	csv    *csv.Writer
	text   *printer
}

func newAuditPrinter(engine *policy.Engine, w io.Writer, o auditOptions) *auditPrinter {
	p := &auditPrinter{engine: engine, w: w, o: o, enc: json.NewEncoder(w), text: newPrinter(w, false)}
	if o.csvOut {
		p.csv = csv.NewWriter(w)
		p.csv.Write([]string{"domain", "verdict", "change", "failing_since", "check", "status", "detail", "fix"})
	}
	return p
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (p *auditPrinter) print(a auditResult) {
	r := a.report
	switch {
	case p.o.jsonOut:
		p.enc.Encode(auditJSON{Report: checkapi.NewReport(r), Change: a.change, FailingSince: rfc3339(a.failingSince)})
	case p.csv != nil:
		row := []string{r.Domain, r.Verdict().String(), a.change, rfc3339(a.failingSince)}
		rows := 0
		for _, c := range r.Checks {
			if c.Finding() {
				p.csv.Write(append(row, string(c.ID), c.Status.String(), c.Detail, c.Fix()))
				rows++
			}
		}
		if rows == 0 {
			p.csv.Write(append(row, "", "", "", ""))
		}
	default:
		p.text.print(p.engine, r)
		since := ""
		if !a.failingSince.IsZero() {
			since = " (failing since " + rfc3339(a.failingSince) + ")"
		}
		fmt.Fprintf(p.w, "  change since the last audit: %s%s\n", a.change, since)
	}
}

func (p *auditPrinter) flush() {
	if p.csv != nil {
		p.csv.Flush()
	}
}
