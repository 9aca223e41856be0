// Package metrics exposes mxguard's Prometheus metrics. It implements the
// engine's Observer and the milter's Recorder.
package metrics

import (
	"net/http"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxguard/mxguard/policy"
)

// Metrics holds the collectors in their own registry.
type Metrics struct {
	reg            *prometheus.Registry
	decisions      *prometheus.CounterVec
	checkResults   *prometheus.CounterVec
	checkCounters  map[policy.CheckID][]prometheus.Counter // by status: no label hashing per message
	decisionTime   prometheus.Histogram
	dnsQueries     *prometheus.CounterVec
	dnsTime        *prometheus.HistogramVec
	probes         *prometheus.CounterVec
	probeTime      prometheus.Histogram
	cacheLookups   *prometheus.CounterVec
	activeSessions prometheus.Gauge
	dropped        *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	selfCheck      *prometheus.GaugeVec
	egressListed   *prometheus.GaugeVec
}

// Engine gives the metrics the engine serving now (it changes on reload).
type Engine func() *policy.Engine

// New registers every metric. engine feeds the cache size and probe gauges.
func New(engine Engine) *Metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_decisions_total", Help: "Decisions by verdict (temperror: failed open) and policy mode (report: nothing was enforced).",
		}, []string{"verdict", "mode"}),
		checkResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_check_results_total", Help: "Check results by check ID and status.",
		}, []string{"check", "status"}),
		decisionTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mxguard_decision_duration_seconds", Help: "Time to evaluate one sender and client.", Buckets: latency,
		}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_dns_queries_total", Help: "DNS query attempts sent upstream, by type and outcome.",
		}, []string{"type", "outcome"}),
		dnsTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mxguard_dns_query_duration_seconds", Help: "Upstream DNS query latency.", Buckets: latency,
		}, []string{"type"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_probes_total", Help: "Port-25 probes by outcome.",
		}, []string{"outcome"}),
		probeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mxguard_probe_duration_seconds", Help: "Port-25 probe duration.", Buckets: latency,
		}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_cache_lookups_total", Help: "Cache lookups by cache (dns, probe, report: a decision's remembered report) and result (hit, miss).",
		}, []string{"cache", "result"}),
		activeSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_active_sessions", Help: "Open MTA connections.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_connections_dropped_total",
			Help: "Front-end connections mxguard closed, by front end and reason: peer (not in allow_users), evicted (closed at the connection cap to make room: it had been silent longest), malformed.",
		}, []string{"front", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_config_reloads_total", Help: "Configuration reloads by result (ok, error).",
		}, []string{"result"}),
	}
	cacheEntries := func(which string) func() float64 {
		return func() float64 {
			if which == "dns" {
				return float64(engine().DNSCacheStats().Entries)
			}
			return float64(engine().ProbeCacheStats().Entries)
		}
	}
	m.selfCheck = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mxguard_self_check",
		Help: "The egress self-check: 1 for the status each check of each outbound address has now, 0 for the others.",
	}, []string{"address", "check", "status"})
	m.egressListed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mxguard_egress_listed",
		Help: "The egress self-check's blocklist lookups (outbound.dnsbl_zones): 1 when the zone lists the outbound address, 0 when it does not; no series while the zone gives no answer to believe (mxguard_self_check{check=\"egress.dnsbl\",status=\"temperror\"}).",
	}, []string{"address", "zone"})
	m.reg.MustRegister(
		m.decisions, m.checkResults, m.decisionTime, m.dnsQueries, m.dnsTime, m.probes, m.probeTime,
		m.cacheLookups, m.activeSessions, m.dropped, m.reloads, m.selfCheck, m.egressListed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_cache_entries", Help: "Entries in the cache.", ConstLabels: prometheus.Labels{"cache": "dns"},
		}, cacheEntries("dns")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_cache_entries", Help: "Entries in the cache.", ConstLabels: prometheus.Labels{"cache": "probe"},
		}, cacheEntries("probe")),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_probes_in_flight", Help: "Port-25 probes connected or connecting now.",
		}, func() float64 { n, _ := engine().ProbesInFlight(); return float64(n) }),
		egressGauge("ipv4", func() bool { v4, _ := engine().EgressBlocked(); return v4 }),
		egressGauge("ipv6", func() bool { _, v6 := engine().EgressBlocked(); return v6 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.checkCounters = map[policy.CheckID][]prometheus.Counter{}
	for _, id := range policy.CheckIDs() { // every series exists from the start
		for st := policy.StatusPass; st <= policy.StatusFail; st++ {
			m.checkCounters[id] = append(m.checkCounters[id], m.checkResults.WithLabelValues(string(id), st.String()))
		}
	}
	for _, v := range []string{"pass", "flag", "hold", "defer", "reject", "temperror"} {
		for _, mode := range []string{"enforce", "report"} {
			m.decisions.WithLabelValues(v, mode)
		}
	}
	// Dashboards and alerts read these before the first message: a rate
	// over a series that does not exist yet is no data, not zero.
	m.initCacheLookups("dns", "probe", "report")
	for _, t := range []uint16{dns.TypeMX, dns.TypeA, dns.TypeAAAA, dns.TypePTR, dns.TypeTXT} {
		m.dnsTime.WithLabelValues(dns.TypeToString[t])
		m.dnsQueries.WithLabelValues(dns.TypeToString[t], "noerror")
		m.dnsQueries.WithLabelValues(dns.TypeToString[t], "timeout")
	}
	for o := policy.OutcomeAccept; o <= policy.OutcomeAbandoned; o++ {
		if o != policy.OutcomeNotAllowed { // never dialled, never counted
			m.probes.WithLabelValues(o.String())
		}
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	for _, fr := range [][2]string{{"milter", "peer"}, {"milter", "evicted"}, {"policy", "peer"}, {"policy", "evicted"},
		{"policy", "malformed"}, {"api", "evicted"}} {
		m.dropped.WithLabelValues(fr[0], fr[1])
	}
	return m
}

func (m *Metrics) initCacheLookups(caches ...string) {
	for _, c := range caches {
		m.cacheLookups.WithLabelValues(c, "hit")
		m.cacheLookups.WithLabelValues(c, "miss")
	}
}

// egressGauge exports whether outbound port 25 looks blocked for family.
func egressGauge(family string, blocked func() bool) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "mxguard_egress_blocked",
		Help:        "1 while outbound port 25 looks blocked from here for the address family (probe.blocked_after probes in a row with no TCP answer or no route; mx.port25 then says temperror or skip), else 0.",
		ConstLabels: prometheus.Labels{"family": family},
	}, func() float64 {
		if blocked() {
			return 1
		}
		return 0
	})
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// DNSQuery implements policy.Observer.
func (m *Metrics) DNSQuery(qtype uint16, outcome string, took time.Duration) {
	t := dns.TypeToString[qtype]
	m.dnsQueries.WithLabelValues(t, outcome).Inc()
	m.dnsTime.WithLabelValues(t).Observe(took.Seconds())
}

// Probe implements policy.Observer.
func (m *Metrics) Probe(outcome policy.Outcome, took time.Duration) {
	m.probes.WithLabelValues(outcome.String()).Inc()
	m.probeTime.Observe(took.Seconds())
}

// CacheLookup implements policy.Observer.
func (m *Metrics) CacheLookup(cache string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cacheLookups.WithLabelValues(cache, result).Inc()
}

// SessionOpened implements milter.Recorder.
func (m *Metrics) SessionOpened() { m.activeSessions.Inc() }

// SessionClosed implements milter.Recorder.
func (m *Metrics) SessionClosed() { m.activeSessions.Dec() }

// ConnectionDropped implements milter.Recorder and postfixpolicy.Recorder.
func (m *Metrics) ConnectionDropped(front, reason string) {
	m.dropped.WithLabelValues(front, reason).Inc()
}

// Decision implements milter.Recorder.
func (m *Metrics) Decision(r *policy.Report, outcome string) {
	mode := "enforce"
	if r.ReportOnly {
		mode = "report"
	}
	m.decisions.WithLabelValues(outcome, mode).Inc()
	for _, c := range r.Checks {
		if cs := m.checkCounters[c.ID]; int(c.Status) < len(cs) {
			cs[c.Status].Inc()
		}
	}
	m.decisionTime.Observe(r.Elapsed.Seconds())
}

// Reload counts a configuration reload.
func (m *Metrics) Reload(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("error").Inc()
	}
}

// SelfCheck exports the egress self-check's host checks and blocklist
// lookups, replacing the last one's (an address taken out of outbound.ips
// or a zone out of outbound.dnsbl_zones disappears).
func (m *Metrics) SelfCheck(reports []*policy.Report) {
	m.selfCheck.Reset()
	m.egressListed.Reset()
	for _, r := range reports {
		for _, a := range r.Blocklists {
			switch a.Status {
			case policy.StatusFail:
				m.egressListed.WithLabelValues(r.ClientIP.String(), a.Zone).Set(1)
			case policy.StatusPass:
				m.egressListed.WithLabelValues(r.ClientIP.String(), a.Zone).Set(0)
			}
		}
		for _, c := range r.Checks {
			if c.ID.AboutDomain() {
				continue // no sender domain: they skip
			}
			for st := policy.StatusPass; st <= policy.StatusFail; st++ {
				v := 0.0
				if c.Status == st {
					v = 1
				}
				m.selfCheck.WithLabelValues(r.ClientIP.String(), string(c.ID), st.String()).Set(v)
			}
		}
	}
}

// SharedCache is what the metrics read of the fleet cache.
type SharedCache interface {
	Up() bool
	Errors() uint64
	Dropped() uint64
}

// WatchSharedCache exports the fleet cache's state: its breaker, its
// errors and dropped writes, and the engine's lock waits and refused values.
// (Its hits and misses are mxguard_cache_lookups_total{cache="shared-dns"}
// and {cache="shared-probe"}: asked after a local miss or to refresh.)
func (m *Metrics) WatchSharedCache(c SharedCache, engine Engine) {
	m.initCacheLookups("shared-dns", "shared-probe")
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_shared_cache_up", Help: "1 when the fleet cache is connected and its circuit breaker closed.",
		}, func() float64 {
			if c.Up() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mxguard_shared_cache_errors_total", Help: "Fleet cache commands that failed or timed out.",
		}, func() float64 { return float64(c.Errors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mxguard_shared_cache_dropped_writes_total", Help: "Writes to the fleet cache dropped while it was down or behind.",
		}, func() float64 { return float64(c.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mxguard_shared_cache_lock_waits_total", Help: "Probes this node left to the node holding the address's lock.",
		}, func() float64 { return float64(engine().SharedStats().LockWaits) }),
	)
	// Values refused by reason: malformed (oversized, expired, inconsistent),
	// or signature (no HMAC of cache.shared.key, or a wrong one).
	for reason, count := range map[string]func(policy.SharedStats) uint64{
		"malformed": func(s policy.SharedStats) uint64 { return s.Garbage },
		"signature": func(s policy.SharedStats) uint64 { return s.BadSignature },
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mxguard_shared_cache_refused_values_total", Help: "Fleet cache values refused, by reason: malformed or signature.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(count(engine().SharedStats())) }))
	}
}
