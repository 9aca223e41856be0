// Package policy is the mxguard engine: it takes a Request (sender, client
// IP, HELO), runs the checks through a caching resolver and prober, and
// returns a Report with a verdict. It knows nothing about MTAs or wire
// protocols; four front ends call Evaluate: the milter (package milter),
// the Postfix policy service (postfixpolicy), the HTTP check API (checkapi)
// and `mxguard check` (cmd/mxguard, whose serve and check also run the
// egress SelfCheck).
// A check is one check_*.go file and a line in checks (checks.go).
package policy

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config is everything the engine needs.
type Config struct {
	Resolver ResolverConfig
	Probe    ProbeConfig
	Cache    CacheConfig
	// OutboundIPs are this relay's own egress addresses (mx.outbound-ip).
	OutboundIPs []netip.Prefix
	// EgressHELO is the name the relay greets with, for SelfCheck; empty
	// means this host's name.
	EgressHELO string
	// DNSBLZones are the blocklists SelfCheck looks the outbound addresses
	// up in (egress.dnsbl); DomainBlocklists those domain.blocklist asks.
	DNSBLZones       []BlocklistZone
	DomainBlocklists []BlocklistZone
	// SkipIdentityNetworks are clients not identity-checked (default loopback).
	SkipIdentityNetworks []netip.Prefix
	Policy               Policy
	// Message configures the message checks.
	Message MessageConfig
	// MaxPTRNames caps the PTR names tried for forward confirmation.
	MaxPTRNames int
	// CheckAuthenticated also identity-checks SMTP AUTH clients; by default
	// they are left out: they are the relay's own users, often on dynamic
	// addresses without reverse DNS.
	CheckAuthenticated bool
	// Shared, when set, is the fleet cache (cache.shared.url), under
	// SharedPrefix; SharedKey, when set, signs its values and refuses those
	// it did not sign (cache.shared.key).
	Shared       SharedCache
	SharedPrefix string
	SharedKey    string
	// Observer, when set, is told about every DNS query, probe and cache lookup.
	Observer Observer
	// Clock replaces time.Now in the caches, for tests.
	Clock func() time.Time
}

// Request is one transaction to judge.
type Request struct {
	// Sender is the MAIL FROM address ("<>" or "" for bounces).
	Sender string
	// Domain, when set, is a bare domain to check instead of Sender.
	Domain string
	// ClientIP is the connecting client; invalid means unknown (no identity checks).
	ClientIP netip.Addr
	// HELO is the HELO/EHLO argument as the client sent it.
	HELO string
	// AuthUser is the SMTP AUTH login of the client ({auth_authen}), if any.
	AuthUser string
	// MessageSkip, when set, has the report list the message checks as
	// skipped for this reason (a milter without checks.message); without
	// it, a report without a message leaves them out. EvaluateMessage
	// runs them.
	MessageSkip string
	// self marks the relay's own egress address (SelfCheck): always
	// identity-checked, no sender domain.
	self bool
}

// Report is the result of one evaluation.
type Report struct {
	Domain   string
	Null     bool // null sender: no domain checks
	ClientIP netip.Addr
	Checks   []Result
	Decision Decision
	Elapsed  time.Duration
	// Incomplete is set when the deadline ended the evaluation before every
	// check finished; the unfinished ones say temperror.
	Incomplete bool
	// ReportOnly is policy.mode: report: front ends apply no verdict but
	// the header (see Policy.ReportOnly).
	ReportOnly bool
	// Blocklists is, in a SelfCheck report, what each zone of
	// outbound.dnsbl_zones said about the address.
	Blocklists []ZoneAnswer
}

// Enforced is the verdict a front end applies: the verdict, or Flag (the
// header alone) under policy.mode: report.
func (r *Report) Enforced() Verdict {
	if r.ReportOnly {
		return min(r.Verdict(), Flag)
	}
	return r.Verdict()
}

// Verdict is the decision's verdict.
func (r *Report) Verdict() Verdict { return r.Decision.Verdict }

// Check returns the result of the check id (the zero Result for an
// unknown id).
func (r *Report) Check(id CheckID) Result {
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	return Result{}
}

// Cause returns the result that set the verdict, if any.
func (r *Report) Cause() (Result, bool) {
	if r.Decision.Cause < 0 || r.Decision.Cause >= len(r.Checks) {
		return Result{}, false
	}
	return r.Checks[r.Decision.Cause], true
}

// Engine evaluates requests. It is safe for concurrent use; its caches are
// shared by all evaluations.
type Engine struct {
	cfg      Config
	budget   time.Duration // longest an evaluation's network work can take
	servers  []string      // the resolvers in use
	resolver *cachedResolver
	prober   *cachedProber
	raw      *smtpProber                     // behind prober; holds the egress state
	memos    map[*memo]*memoStore            // the checks' memories (memo.go)
	reports  *ttlLRU[reportKey, *remembered] // warm reports (warm.go)
	// checks is the registry the engine runs: a test may give one engine
	// a check of its own without touching the others.
	checks []*check
	// outboundSingles are the single addresses of OutboundIPs.
	outboundSingles []netip.Addr
	fixes           []string // each check's fix text, with this engine's settings
}

// DefaultConfig is the engine configuration used when a setting is left zero;
// configs/mxguard.yaml documents the same values.
func DefaultConfig() Config {
	return Config{
		Resolver: defaultResolver,
		Probe:    defaultProbe,
		Cache: CacheConfig{
			DNSEntries:      100_000,
			DNSMaxBytes:     64 << 20,
			ProbeEntries:    50_000,
			MinTTL:          time.Minute,
			MaxTTL:          time.Hour,
			NegativeTTL:     5 * time.Minute,
			NegativeMaxTTL:  15 * time.Minute,
			ErrorTTL:        10 * time.Second,
			ProbeAcceptTTL:  time.Hour,
			ProbeRefusedTTL: 10 * time.Minute,
			ProbeTimeoutTTL: 2 * time.Minute,
			Prefetch:        true,
		},
		SkipIdentityNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		SharedPrefix:         "mxguard:v1:",
		Policy:               defaultPolicy(),
		Message:              MessageConfig{MaxBytes: 10 << 20},
		MaxPTRNames:          10,
	}
}

var defaults = DefaultConfig()

// positive is v, or d when v is zero or negative (a nonsensical setting).
func positive[T int | uint16 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// withDefaults fills every zero setting from DefaultConfig. Lists stay as
// given: an empty list is a choice.
func (c Config) withDefaults() Config {
	d := defaults
	c.Resolver = c.Resolver.withDefaults()
	c.Probe = c.Probe.withDefaults()
	k := &c.Cache
	k.DNSEntries = positive(k.DNSEntries, d.Cache.DNSEntries)
	k.DNSMaxBytes = positive(k.DNSMaxBytes, d.Cache.DNSMaxBytes)
	k.ProbeEntries = positive(k.ProbeEntries, d.Cache.ProbeEntries)
	k.MinTTL = positive(k.MinTTL, d.Cache.MinTTL)
	k.MaxTTL = positive(k.MaxTTL, d.Cache.MaxTTL)
	k.NegativeTTL = positive(k.NegativeTTL, d.Cache.NegativeTTL)
	k.NegativeMaxTTL = positive(k.NegativeMaxTTL, d.Cache.NegativeMaxTTL)
	k.ErrorTTL = positive(k.ErrorTTL, d.Cache.ErrorTTL)
	k.ProbeAcceptTTL = positive(k.ProbeAcceptTTL, d.Cache.ProbeAcceptTTL)
	k.ProbeRefusedTTL = positive(k.ProbeRefusedTTL, d.Cache.ProbeRefusedTTL)
	k.ProbeTimeoutTTL = positive(k.ProbeTimeoutTTL, d.Cache.ProbeTimeoutTTL)
	if c.Policy.Actions == nil {
		c.Policy.Actions = DefaultActions()
	}
	if _, ok := c.Policy.Actions[EgressDNSBL]; !ok {
		c.Policy.Actions = maps.Clone(c.Policy.Actions)
		c.Policy.Actions[EgressDNSBL] = egressDNSBLAction
	}
	c.DNSBLZones = zonesWithDefaults(c.DNSBLZones)
	c.DomainBlocklists = zonesWithDefaults(c.DomainBlocklists)
	c.MaxPTRNames = positive(c.MaxPTRNames, d.MaxPTRNames)
	if c.Message.MaxBytes <= 0 {
		c.Message.MaxBytes = d.Message.MaxBytes
	}
	if c.EgressHELO == "" {
		c.EgressHELO, _ = os.Hostname()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// New builds an engine: DNS client and prober, each behind its cache.
// Zero settings take their DefaultConfig value.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	client, err := newDNSClient(cfg.Resolver)
	if err != nil {
		return nil, err
	}
	dnsLRU, err := newSizedLRU(cfg.Cache.DNSEntries, int64(cfg.Cache.DNSMaxBytes), dnsEntrySize, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("DNS %w", err)
	}
	probeLRU, err := newTTLLRU[netip.Addr, probeResult](cfg.Cache.ProbeEntries, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("probe %w", err)
	}
	memos, err := memoStores(cfg)
	if err != nil {
		return nil, err
	}
	// An eighth of the DNS cache's bounds, as the checks' memories have.
	reports, err := newSizedLRU(max(cfg.Cache.DNSEntries/8, 128), int64(cfg.Cache.DNSMaxBytes/8), reportSize, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("report %w", err)
	}
	client.observer = cfg.Observer
	raw := newSMTPProber(cfg.Probe)
	raw.observer = cfg.Observer
	// A shared lookup gets room for all its attempts plus one follow-up query
	// at the end of a CNAME chain.
	budget := client.cfg.Timeout * time.Duration(client.cfg.Attempts+1)
	// An evaluation's work is at most two rounds of lookups (MX, then the
	// targets' A/AAAA; or PTR, then its names) and a probe, with its wait for
	// a slot.
	evalBudget := 2*budget + cfg.Probe.QueueTimeout + cfg.Probe.ConnectTimeout + cfg.Probe.GreetingTimeout + quitTimeout
	var shared *sharedLevel
	if cfg.Shared != nil {
		shared = &sharedLevel{cache: cfg.Shared, prefix: cfg.SharedPrefix, key: []byte(cfg.SharedKey), limits: cfg.Cache, now: cfg.Clock,
			dnsCounter:   &hitCounter{observer: cfg.Observer, cache: "shared-dns"},
			probeCounter: &hitCounter{observer: cfg.Observer, cache: "shared-probe"}}
	}
	return &Engine{
		cfg:      cfg,
		budget:   evalBudget,
		servers:  client.Servers(),
		resolver: &cachedResolver{next: client, cfg: cfg.Cache, budget: budget, lru: dnsLRU, shared: shared, counter: &hitCounter{observer: cfg.Observer, cache: "dns"}},
		prober: &cachedProber{next: raw, cfg: cfg.Cache, lru: probeLRU, shared: shared, port: cfg.Probe.Port,
			lockFor: cfg.Probe.ConnectTimeout + cfg.Probe.GreetingTimeout + quitTimeout,
			counter: &hitCounter{observer: cfg.Observer, cache: "probe"}},
		raw:             raw,
		memos:           memos,
		reports:         reports,
		checks:          checks,
		outboundSingles: singleOutboundIPs(cfg.OutboundIPs),
		fixes:           fixTexts(cfg),
	}, nil
}

// fixTexts fills the settings that fix texts name ("{port}") in.
func fixTexts(cfg Config) []string {
	fill := strings.NewReplacer("{port}", strconv.Itoa(int(cfg.Probe.Port)))
	fixes := make([]string, len(checks))
	for i, c := range checks {
		fixes[i] = fill.Replace(c.fix)
	}
	return fixes
}

// Resolvers returns the DNS servers the engine asks.
func (e *Engine) Resolvers() []string { return slices.Clone(e.servers) }

// Config returns the configuration the engine runs with.
func (e *Engine) Config() Config { return e.cfg }

// DNSCacheStats and ProbeCacheStats report cache traffic.
func (e *Engine) DNSCacheStats() CacheStats {
	r := e.resolver
	return CacheStats{r.counter.hits.Load(), r.counter.misses.Load(), r.lru.lru.Len(), r.lru.bytes.Load()}
}

// ProbeCacheStats reports probe cache traffic.
func (e *Engine) ProbeCacheStats() CacheStats {
	return CacheStats{Hits: e.prober.counter.hits.Load(), Misses: e.prober.counter.misses.Load(), Entries: e.prober.lru.lru.Len()}
}

// outliving returns a context that keeps going after ctx ends, for up to
// budget. Work done there asks the network even for a cache-only run.
func outliving(ctx context.Context, budget time.Duration) (context.Context, context.CancelFunc) {
	ctx = context.WithoutCancel(ctx)
	if cacheOnly(ctx) {
		ctx = context.WithValue(ctx, cacheOnlyKey{}, (*cacheOnlyRun)(nil))
	}
	return context.WithTimeout(ctx, budget)
}

// ProbesInFlight is the number of probes connected or connecting now, and
// the most there have been at once.
func (e *Engine) ProbesInFlight() (now, peak int) { return e.raw.InFlight() }

// EgressBlocked reports, per address family, whether outbound port 25 looks
// blocked from here now: while it does, mx.port25 reports that family's
// probes as inconclusive rather than judging the remote hosts.
func (e *Engine) EgressBlocked() (ipv4, ipv6 bool) { return e.raw.egress.state() }

// Evaluate runs every check for req. When ctx ends first, the checks not yet
// done report temperror; their lookups and probes go on in the background,
// within the engine's budget, and land in the cache.
//
// The domain checks and the sending-host checks run as two chains side by
// side; within a chain each check builds on the facts of the one before,
// and the facts fan out in parallel only where they miss the cache.
func (e *Engine) Evaluate(ctx context.Context, req Request) *Report {
	began := time.Now()
	if rep := e.evaluateWarm(ctx, req, began); rep != nil {
		return rep
	}
	return e.evaluateChains(ctx, req, began)
}

// evaluateChains runs req's checks in the two chains, which ask the
// network for what is not cached.
func (e *Engine) evaluateChains(ctx context.Context, req Request, began time.Time) *Report {
	ev := newEvaluation(e, req)
	results := make([]Result, len(e.checks))
	done := make(chan int, len(e.checks))
	got := make([]Result, len(e.checks))     // written by a chain before it signals
	work, cancel := outliving(ctx, e.budget) // the last chain to finish cancels it
	var chains atomic.Int32
	chains.Store(int32(numChains))
	var failure atomic.Pointer[string]
	for chain := range chain(numChains) {
		go func() {
			defer func() {
				if v := recover(); v != nil { // a bug must not take the daemon down
					msg := fmt.Sprintf("internal error: %v", v)
					failure.Store(&msg)
				}
				if chains.Add(-1) == 0 {
					cancel()
					close(done)
				}
			}()
			for i, c := range e.checks {
				if c.chain == chain {
					got[i] = e.runCheck(work, ev, i)
					done <- i
				}
			}
		}()
	}
	finished := make([]bool, len(e.checks))
	take := func(i int) { results[i], finished[i] = got[i], true }
wait:
	for {
		select {
		case i, open := <-done:
			if !open {
				break wait
			}
			take(i)
		case <-ctx.Done():
			break wait
		}
	}
	for { // keep what finished in the same instant as the deadline
		select {
		case i, open := <-done:
			if open {
				take(i)
				continue
			}
		default:
		}
		break
	}
	unfinished := "not finished before the decision deadline"
	if f := failure.Load(); f != nil {
		unfinished = *f
	}
	return e.report(ev, req, results, finished, unfinished, began)
}

// report builds the report of an evaluation from its checks' results: a
// check not finished reports temperror, for the reason unfinished.
func (e *Engine) report(ev *evaluation, req Request, results []Result, finished []bool, unfinished string, began time.Time) *Report {
	incomplete := false
	kept := results[:0]
	for i, c := range e.checks {
		switch {
		case c.chain == chainMessage:
			if req.MessageSkip == "" {
				continue
			}
			results[i] = Result{ID: c.id, Status: StatusSkip, Detail: req.MessageSkip}
		case !finished[i]:
			results[i] = Result{ID: c.id, Status: StatusTempError, Detail: unfinished}
			incomplete = true
		}
		kept = append(kept, results[i])
	}
	results = kept
	rep := &Report{
		Domain:     ev.sender.Domain,
		Null:       ev.sender.Null && !ev.self,
		ClientIP:   ev.client,
		Checks:     results,
		Elapsed:    time.Since(began),
		Incomplete: incomplete,
		ReportOnly: e.cfg.Policy.ReportOnly,
	}
	if ev.self { // the subject is the relay's own address
		rep.Domain = ev.client.String()
	}
	rep.Decision = e.cfg.Policy.Decide(rep.Domain, rep.ClientIP, results)
	return rep
}

// runCheck runs the i-th check, or reports why it does not apply, and fills
// in what its descriptor says about a finding.
func (e *Engine) runCheck(ctx context.Context, ev *evaluation, i int) Result {
	c := e.checks[i]
	var r Result
	if reason := c.gate(ctx, ev); reason != "" {
		r = skip(reason)
	} else {
		r = c.run(ctx, ev)
	}
	r.ID = c.id
	if r.Status == StatusFail || r.Status == StatusWarn {
		r.fix = cmp.Or(r.fix, e.fixes[i]) // a check may say exactly what to change
		if r.Enhanced == "" {
			r.Enhanced = c.enhanced
		}
	}
	return r
}

// SelfCheck checks the relay itself, as receivers will see it: each single
// address of outbound.ips with helo, by the semantics of client.ptr,
// client.fcrdns, helo.syntax and helo.matches-ptr (the domain checks skip),
// and looked up in outbound.dnsbl_zones (egress.dnsbl, the last result).
// It returns one report per address, in outbound.ips order.
func (e *Engine) SelfCheck(ctx context.Context, helo string) []*Report {
	reports := make([]*Report, len(e.outboundSingles))
	for i, ip := range e.outboundSingles {
		var listing Result
		var answers []ZoneAnswer
		fanOut(ctx, 2, false, func(j int) {
			if j == 0 {
				reports[i] = e.Evaluate(ctx, Request{ClientIP: ip, HELO: helo, self: true})
			} else {
				listing, answers = e.checkEgressDNSBL(ctx, ip)
			}
		})
		r := reports[i]
		r.Checks = append(r.Checks, listing)
		r.Blocklists = answers
		r.Decision = e.cfg.Policy.Decide(r.Domain, r.ClientIP, r.Checks)
	}
	return reports
}

// Reconfigure returns an engine for cfg that keeps prev's caches where they
// still hold: the DNS cache when the resolvers and its size and lifetimes
// are unchanged (with the checks' memories whose inputs are), the probe
// cache when its size and lifetimes and the port and timeouts are. A
// configuration reload then does not start cold, and never serves what
// other resolvers or other TTL bounds put there.
func Reconfigure(prev *Engine, cfg Config) (*Engine, error) {
	e, err := New(cfg)
	if err != nil {
		return nil, err
	}
	c, d := e.cfg.Cache, prev.cfg.Cache
	if slices.Equal(e.servers, prev.servers) && c.DNSEntries == d.DNSEntries && c.DNSMaxBytes == d.DNSMaxBytes &&
		c.MinTTL == d.MinTTL && c.MaxTTL == d.MaxTTL && c.NegativeTTL == d.NegativeTTL &&
		c.NegativeMaxTTL == d.NegativeMaxTTL && c.ErrorTTL == d.ErrorTTL {
		e.resolver.lru = prev.resolver.lru
		for m, store := range prev.memos {
			if m.sameInputs == nil || m.sameInputs(prev.cfg, e.cfg) {
				e.memos[m] = store
			}
		}
	}
	p, q := e.cfg.Probe, prev.cfg.Probe
	if c.ProbeEntries == d.ProbeEntries && c.ProbeAcceptTTL == d.ProbeAcceptTTL &&
		c.ProbeRefusedTTL == d.ProbeRefusedTTL && c.ProbeTimeoutTTL == d.ProbeTimeoutTTL &&
		p.Port == q.Port && p.ConnectTimeout == q.ConnectTimeout && p.GreetingTimeout == q.GreetingTimeout &&
		slices.Equal(p.AllowNetworks, q.AllowNetworks) {
		e.prober.lru = prev.prober.lru
	}
	return e, nil
}
