package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// benchSandbox is a sandbox with one well-configured sender domain and
// sending host, and the engine configuration pointing at it. Every check
// passes for them, spf.relay and dmarc.record too: a benchmark whose
// domain is flagged measures another path than a relay's everyday one.
type benchSandbox struct {
	*smtptest.Sandbox
	cfg     policy.Config
	lookups *lookups
}

const (
	benchDomain = "bench.test"
	benchClient = "127.0.9.9"
	benchHELO   = "out.bench.test"
)

func newBenchSandbox() (*benchSandbox, error) {
	sb, err := smtptest.NewSandbox()
	if err != nil {
		return nil, err
	}
	if _, err := sb.Serve("127.0.9.1", smtptest.Accept); err != nil {
		return nil, err
	}
	sb.Zone.MX(benchDomain, 10, "mx."+benchDomain).A("mx."+benchDomain, "127.0.9.1").
		PTR(benchClient, benchHELO).A(benchHELO, benchClient).
		PTR("127.0.0.1", "localhost.bench.test").A("localhost.bench.test", "127.0.0.1")
	spectest.Passing(sb.Zone, benchDomain)
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Probe.Port = sb.Port
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Probe.ConnectTimeout, cfg.Probe.GreetingTimeout = time.Second, 2*time.Second
	cfg.SkipIdentityNetworks = nil                                                                  // check the sending host too: the full path
	cfg.OutboundIPs = []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(spectest.IPOutDual), 32)} // what Authenticated's SPF allows
	l := &lookups{}
	cfg.Observer = l
	return &benchSandbox{Sandbox: sb, cfg: cfg, lookups: l}, nil
}

// lookups counts the engine's network work: the cache misses a decision
// waited for, and every upstream query and probe. Where no decision
// waited, each upstream one was a background refresh (cache.prefetch).
type lookups struct{ waited, upstream atomic.Int64 }

func (l *lookups) DNSQuery(uint16, string, time.Duration) { l.upstream.Add(1) }
func (l *lookups) Probe(policy.Outcome, time.Duration)    { l.upstream.Add(1) }
func (l *lookups) CacheLookup(cache string, hit bool) {
	if !hit && (cache == "dns" || cache == "probe") {
		l.waited.Add(1)
	}
}

// since returns the rows for the lookups made after a snapshot of l, in
// the phase named; a wait fails the run's sanity.
func (l *lookups) since(bench, phase string, waited0, upstream0 int64) []row {
	waited, upstream := l.waited.Load()-waited0, l.upstream.Load()-upstream0
	return []row{
		sanity(bench, "lookups a decision waited for, "+phase, fmt.Sprint(waited), "0", waited == 0),
		// Concurrent misses of one name share one query: a floor.
		{bench, "background refreshes (prefetch), " + phase, fmt.Sprintf("at least %d upstream queries and probes", max(upstream-waited, 0)), "", false},
	}
}

// steady drives mxguard alone, with caches that keep everything for ttl,
// for three times ttl: a sender in steady use never waits for a lookup,
// as prefetch refreshes what it asks for before it expires, the checks'
// memories (spf.relay, dmarc.record) too. (The alternating rounds leave
// mxguard idle for a round: not steady use.)
func steady(sb *benchSandbox, sessions int, ttl time.Duration, check func(smtptest.MilterResult) error) ([]row, error) {
	cfg := sb.cfg
	c := &cfg.Cache
	c.MinTTL, c.MaxTTL, c.ProbeAcceptTTL, c.ProbeRefusedTTL, c.ProbeTimeoutTTL = ttl, ttl, ttl, ttl, ttl
	engine, err := policy.New(cfg)
	if err != nil {
		return nil, err
	}
	m, addr, err := serveMxguard(engine, &latencies{}, nil)
	if err != nil {
		return nil, err
	}
	defer m.Shutdown(context.Background())
	if _, _, err := drive(addr, 1, ttl/10, check); err != nil {
		return nil, err
	}
	waited0, upstream0 := sb.lookups.waited.Load(), sb.lookups.upstream.Load()
	n, _, err := drive(addr, sessions, 3*ttl, check)
	if err != nil {
		return nil, err
	}
	return sb.lookups.since("milter", fmt.Sprintf("%d transactions in %v with every cache TTL %v", n, 3*ttl, ttl), waited0, upstream0), nil
}

// latencies records decision latencies, and counts the decisions that did
// not pass: the benchmarks measure a passing sender's path.
type latencies struct {
	mu        sync.Mutex
	ds        []time.Duration
	notPassed atomic.Int64
}

func (l *latencies) SessionOpened()                   {}
func (l *latencies) SessionClosed()                   {}
func (l *latencies) ConnectionDropped(string, string) {}
func (l *latencies) Decision(r *policy.Report, _ string) {
	if r.Verdict() != policy.Pass {
		l.notPassed.Add(1)
	}
	l.mu.Lock()
	l.ds = append(l.ds, r.Elapsed)
	l.mu.Unlock()
}

func (l *latencies) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	ds := l.ds
	l.ds = nil
	return ds
}

// serveMxguard runs the mxguard milter on a loopback port, giving seen
// (the inventory's hook, or nil) every report.
func serveMxguard(engine *policy.Engine, rec milter.Recorder, seen func(*policy.Report)) (*milter.Milter, string, error) {
	m := milter.New(&milter.Config{Engine: engine, HeaderName: "X-MXGuard", DecisionTimeout: 20 * time.Second},
		milter.Options{Recorder: rec, Seen: seen, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go m.Serve(ln)
	return m, ln.Addr().String(), nil
}

// serveNoop runs the naive no-op milter: go-milter's NoOpMilter with the
// library's defaults, as a first milter usually starts.
func serveNoop() (func(), string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }}
	go srv.Serve(ln)
	return func() { ln.Close() }, ln.Addr().String(), nil
}

// milterRig is the sandbox with mxguard and the no-op milter in front of it.
type milterRig struct {
	sb       *benchSandbox
	engine   *policy.Engine
	mxguard  *milter.Milter
	rec      *latencies
	mxAddr   string
	noopAddr string
	stopNoop func()
}

func startMilters() (*milterRig, error) {
	sb, err := newBenchSandbox()
	if err != nil {
		return nil, err
	}
	engine, err := policy.New(sb.cfg)
	if err != nil {
		sb.Close()
		return nil, err
	}
	r := &milterRig{sb: sb, engine: engine, rec: &latencies{}}
	if r.mxguard, r.mxAddr, err = serveMxguard(engine, r.rec, nil); err == nil {
		r.stopNoop, r.noopAddr, err = serveNoop()
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *milterRig) close() {
	if r.mxguard != nil {
		r.mxguard.Shutdown(context.Background())
	}
	if r.stopNoop != nil {
		r.stopNoop()
	}
	r.sb.Close()
}

// transaction is the client's full transaction, as Postfix plays it.
func transaction() smtptest.MilterConn {
	body := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", 16)
	return smtptest.MilterConn{
		ClientIP: benchClient, ClientName: benchHELO, HELO: benchHELO,
		Macros: map[string]string{"j": "mta.bench.test", "{daemon_name}": "smtpd"},
		Messages: []smtptest.MilterMessage{{
			From: "sender@" + benchDomain, To: []string{"rcpt@example.net"}, QueueID: "4BENCH1",
			Headers: [][2]string{
				{"From", "Sender <sender@" + benchDomain + ">"}, {"To", "<rcpt@example.net>"},
				{"Subject", "benchmark"}, {"Date", "Mon, 23 Nov 2026 12:00:00 +0000"},
				{"Message-ID", "<bench@bench.test>"}, {"MIME-Version", "1.0"},
				{"Content-Type", "text/plain; charset=utf-8"},
			},
			Body: body,
		}},
	}
}

// drive plays transactions on addr from n sessions for d, and returns the
// count and the client-side transaction latencies.
func drive(addr string, n int, d time.Duration, check func(smtptest.MilterResult) error) (int, []time.Duration, error) {
	var done atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(stop) {
				began := time.Now()
				res, err := smtptest.PlayMilter("tcp", addr, transaction())
				if err == nil {
					err = check(res[0])
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(began))
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return int(done.Load()), lat, firstErr
}

// inventoried is a second mxguard milter on the rig's engine that records
// every decision in a domain inventory as serve does (a file, serve's
// bounds), so that the rounds can compare it with the first, which keeps
// none: what the Seen hook costs the mail path.
type inventoried struct {
	m    *milter.Milter
	addr string
	rec  *latencies
	inv  *inventory.Inventory
	dir  string
}

func startInventoried(engine *policy.Engine) (*inventoried, error) {
	dir, err := os.MkdirTemp("", "mxbench-inventory-")
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := inventory.OpenLocal(filepath.Join(dir, "inventory"), 1_000_000, 512<<20, true, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	i := &inventoried{rec: &latencies{}, inv: inventory.New(store, inventory.Options{Log: log}), dir: dir}
	if i.m, i.addr, err = serveMxguard(engine, i.rec, i.inv.Record); err != nil {
		i.close()
		return nil, err
	}
	return i, nil
}

// recorded closes the inventory, which writes what it queued, and returns
// the messages it holds for the bench domain and those it dropped.
func (i *inventoried) recorded() (messages, dropped uint64, err error) {
	i.m.Shutdown(context.Background())
	i.m = nil
	if err := i.inv.Close(); err != nil {
		return 0, 0, err
	}
	e, err := i.inv.Store().Get(context.Background(), benchDomain)
	if e != nil {
		messages = e.Messages
	}
	return messages, i.inv.Dropped(), err
}

func (i *inventoried) close() {
	if i.m != nil {
		i.m.Shutdown(context.Background())
		i.inv.Close()
	}
	os.RemoveAll(i.dir)
}

func runMilter(fs *flag.FlagSet, args []string) ([]row, error) {
	sessions := fs.Int("sessions", 8, "concurrent milter sessions")
	dur := fs.Duration("duration", 3*time.Second, "length of one round")
	rounds := fs.Int("rounds", 3, "alternating rounds per milter")
	ttl := fs.Duration("ttl", 2*time.Second, "every cache TTL in the steady run (three times as long) after the rounds")
	// The quick steady run's TTL leaves a quarter of a second for a loaded
	// machine to refresh what ages.
	parse(fs, args, "sessions=2", "duration=200ms", "rounds=1", "ttl=1s")

	rig, err := startMilters()
	if err != nil {
		return nil, err
	}
	defer rig.close()
	sb, rec, mxAddr, noopAddr := rig.sb, rig.rec, rig.mxAddr, rig.noopAddr
	inv, err := startInventoried(rig.engine)
	if err != nil {
		return nil, err
	}
	defer inv.close()

	want := fmt.Sprintf("pass; domain=%s; ip=%s", benchDomain, benchClient)
	checkMx := func(r smtptest.MilterResult) error {
		if h, _ := r.Header("X-MXGuard"); h != want {
			return fmt.Errorf("mxguard answered %q %q", h, r.Reply)
		}
		return nil
	}
	checkNoop := func(r smtptest.MilterResult) error {
		if !r.Accepted() {
			return fmt.Errorf("no-op milter did not accept: %c", r.Action)
		}
		return nil
	}
	// Warm the cache (and the connections' code paths) first.
	if _, _, err := drive(mxAddr, 1, 200*time.Millisecond, checkMx); err != nil {
		return nil, err
	}
	invDriven, _, err := drive(inv.addr, 1, 100*time.Millisecond, checkMx)
	if err != nil {
		return nil, err
	}
	rec.take()
	inv.rec.take()
	dnsBefore := sb.DNS.Queries()
	waited0, upstream0 := sb.lookups.waited.Load(), sb.lookups.upstream.Load()

	// Each round: the no-op milter, then mxguard without and with the
	// inventory, those two in turns first.
	var noopRates, mxRates, invRates, mxCPU, invCPU []float64
	var mxLat, noopLat []time.Duration
	for r := 0; r < *rounds; r++ {
		n, lat, err := drive(noopAddr, *sessions, *dur, checkNoop)
		if err != nil {
			return nil, err
		}
		noopRates = append(noopRates, float64(n)/dur.Seconds())
		noopLat = append(noopLat, lat...)
		for turn := range 2 {
			cpu0 := selfCPU()
			if (r+turn)%2 == 0 {
				n, lat, err = drive(mxAddr, *sessions, *dur, checkMx)
				mxRates = append(mxRates, float64(n)/dur.Seconds())
				mxCPU = append(mxCPU, float64(selfCPU()-cpu0)/float64(max(n, 1)))
				mxLat = append(mxLat, lat...)
			} else {
				n, _, err = drive(inv.addr, *sessions, *dur, checkMx)
				invRates = append(invRates, float64(n)/dur.Seconds())
				invCPU = append(invCPU, float64(selfCPU()-cpu0)/float64(max(n, 1)))
				invDriven += n
			}
			if err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(os.Stderr, "round %d: no-op %.0f/s, mxguard %.0f/s, with the inventory %.0f/s\n", r+1, noopRates[r], mxRates[r], invRates[r])
	}
	decisions, invDecisions := rec.take(), inv.rec.take()
	ratio, invRatio := median(mxRates)/median(noopRates), median(invRates)/median(noopRates)
	recorded, dropped, err := inv.recorded()
	if err != nil {
		return nil, err
	}
	rows := append([]row{
		{"milter", fmt.Sprintf("no-op go-milter, %d sessions", *sessions), fmt.Sprintf("%.0f msg/s", median(noopRates)), "", false},
		{"milter", fmt.Sprintf("mxguard warm cache, %d sessions", *sessions), fmt.Sprintf("%.0f msg/s", median(mxRates)), "", false},
		{"milter", "mxguard / no-op throughput", fmt.Sprintf("%.1f%%", 100*ratio), "≥ 130% " + verdict(ratio >= 1.3), false},
		{"milter", "decision latency p50 / p99", ms(percentile(decisions, 50)) + " / " + ms(percentile(decisions, 99)), "p99 ≤ 1 ms " + verdict(percentile(decisions, 99) <= time.Millisecond), false},
		{"milter", "transaction latency p50 / p99 (no-op)", ms(percentile(noopLat, 50)) + " / " + ms(percentile(noopLat, 99)), "", false},
		{"milter", "transaction latency p50 / p99 (mxguard)", ms(percentile(mxLat, 50)) + " / " + ms(percentile(mxLat, 99)), "", false},
		{"milter", "inventory off / on: mxguard / no-op throughput", fmt.Sprintf("%.1f%% / %.1f%%", 100*ratio, 100*invRatio), "", false},
		{"milter", "inventory off / on: decision latency p50 / p99", ms(percentile(decisions, 50)) + " / " + ms(percentile(decisions, 99)) + " vs " +
			ms(percentile(invDecisions, 50)) + " / " + ms(percentile(invDecisions, 99)), "", false},
		{"milter", "inventory off / on: CPU per transaction in this process (client and milter)",
			ms(time.Duration(median(mxCPU))) + " / " + ms(time.Duration(median(invCPU))), "", false},
		sanity("milter", "inventory: messages recorded + dropped / transactions", fmt.Sprintf("%d + %d / %d", recorded, dropped, invDriven),
			"all", recorded+dropped == uint64(invDriven)),
		sanity("milter", "decisions that did not pass", fmt.Sprint(rec.notPassed.Load()+inv.rec.notPassed.Load()), "0", rec.notPassed.Load()+inv.rec.notPassed.Load() == 0),
		{"milter", "DNS queries during the warm rounds", fmt.Sprint(sb.DNS.Queries() - dnsBefore), "", false},
	}, sb.lookups.since("milter", "alternating warm rounds", waited0, upstream0)...)
	more, err := steady(sb, *sessions, *ttl, checkMx)
	return append(rows, more...), err
}
