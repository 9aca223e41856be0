package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// evaluation holds what one Evaluate call has learnt. Checks run
// concurrently and share these facts; each fact is gathered once, on first
// use, through the engine's caches.
type evaluation struct {
	e       *Engine
	sender  Sender
	client  netip.Addr
	heloRaw string
	self    bool // SelfCheck: the relay's own address
	// identitySkip says why the sending host is not checked ("" = it is).
	identitySkip string

	mx      once[mxFacts]
	targets once[[]target]
	probes  once[map[netip.Addr]probeResult]
	ptr     once[lookupResult]
	fcrdns  once[fcrdnsFacts]

	// The message checks' facts (EvaluateMessage).
	msg            *Message
	envelope       *Report
	authorFacts    once[authorFacts]
	signatureFacts once[[]signatureFacts]
	authorDMARC    once[discovered]
	dkimAligned    once[alignedFacts]
}

// once computes a value on first use and hands the same value to every caller.
type once[T any] struct {
	o sync.Once
	v T
}

func (l *once[T]) get(f func() T) T {
	l.o.Do(func() { l.v = f() })
	return l.v
}

func newEvaluation(e *Engine, req Request) *evaluation {
	sender := ParseSender(req.Sender)
	if req.Domain != "" {
		sender = ParseDomain(req.Domain)
	}
	ev := &evaluation{
		e:       e,
		sender:  sender,
		client:  req.ClientIP.Unmap(),
		heloRaw: strings.TrimSpace(req.HELO),
		self:    req.self,
	}
	switch {
	case req.self:
	case !ev.client.IsValid():
		ev.identitySkip = "no client IP given"
	case inPrefixes(ev.client, e.cfg.SkipIdentityNetworks):
		ev.identitySkip = fmt.Sprintf("client %s is in identity.skip_networks", ev.client)
	case e.cfg.Policy.ClientAllowed(ev.client):
		ev.identitySkip = fmt.Sprintf("client %s is allow-listed (policy.allow_networks)", ev.client)
	case req.AuthUser != "" && !e.cfg.CheckAuthenticated:
		ev.identitySkip = "the client authenticated (SMTP AUTH); see identity.check_authenticated"
	}
	return ev
}

// domainSkip says why the domain checks after domain.syntax do not run.
func (ev *evaluation) domainSkip() string {
	switch {
	case ev.self:
		return "egress self-check: no sender domain"
	case ev.sender.Null:
		return "null sender <>: no domain to check"
	case ev.sender.Unqualified:
		return "the sender address has no domain; the MTA qualifies it with its own"
	case ev.sender.Err != nil:
		return "the sender domain is not a valid host name"
	case ev.e.cfg.Policy.DomainAllowed(ev.sender.Domain):
		return fmt.Sprintf("%s is allow-listed (policy.allow_domains)", ev.sender.Domain)
	}
	return ""
}

// lookupResult is an answer or the error that stood in for it.
type lookupResult struct {
	ans *dnsAnswer
	err error
}

func (ev *evaluation) lookup(ctx context.Context, name string, qtype uint16) lookupResult {
	a, err := ev.e.resolver.Lookup(ctx, name, qtype)
	return lookupResult{a, err}
}

// fanOut runs fn(0..n-1): in parallel when it has to wait for the network,
// one after the other when everything it needs is cached (warm) or ctx is
// a cache-only run (warm.go), where goroutines would only cost scheduling.
func fanOut(ctx context.Context, n int, warm bool, fn func(i int)) {
	if warm || n <= 1 || cacheOnly(ctx) {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	var failure atomic.Value
	for i := range n {
		wg.Go(func() {
			defer func() {
				if v := recover(); v != nil {
					failure.CompareAndSwap(nil, v)
				}
			}()
			fn(i)
		})
	}
	wg.Wait()
	if v := failure.Load(); v != nil {
		panic(v) // in the caller's goroutine, where Evaluate recovers it
	}
}

// addressesCached reports whether both address lookups of name are cached.
func (ev *evaluation) addressesCached(name string) bool {
	r := ev.e.resolver
	return r.cached(name, dns.TypeA) && r.cached(name, dns.TypeAAAA)
}

// lookupBoth asks for A and AAAA of name, at the same time on a cache miss.
func (ev *evaluation) lookupBoth(ctx context.Context, name string) (a, aaaa lookupResult) {
	fanOut(ctx, 2, ev.addressesCached(name), func(i int) {
		if i == 0 {
			a = ev.lookup(ctx, name, dns.TypeA)
		} else {
			aaaa = ev.lookup(ctx, name, dns.TypeAAAA)
		}
	})
	return a, aaaa
}

// mxFacts is the sender domain's mail exchanger set (RFC 5321 section 5.1).
type mxFacts struct {
	answer      lookupResult // the MX lookup
	implicit    bool         // no MX: the domain itself, via its A/AAAA
	implicitErr error        // the A/AAAA lookup failed
	nullMX      bool
	hosts       []mxHost // the targets, most preferred first (at most maxMXRecords)
}

func (ev *evaluation) mxSet(ctx context.Context) mxFacts {
	return ev.mx.get(func() mxFacts {
		f := mxFacts{answer: ev.lookup(ctx, ev.sender.Domain, dns.TypeMX)}
		if f.answer.err != nil || f.answer.ans.Kind == kindNXDomain {
			return f
		}
		if f.answer.ans.Kind == kindNoData { // implicit MX, only after a clean NODATA
			a, aaaa := ev.lookupBoth(ctx, ev.sender.Domain)
			if len(answerAddrs(a))+len(answerAddrs(aaaa)) > 0 {
				f.implicit = true
				f.hosts = []mxHost{{Host: ev.sender.Domain}}
			} else if a.err != nil {
				f.implicitErr = a.err
			} else if aaaa.err != nil {
				f.implicitErr = aaaa.err
			}
			return f
		}
		for _, mx := range f.answer.ans.MX {
			if mx.Host == "" {
				f.nullMX = true
				continue
			}
			f.hosts = append(f.hosts, mx)
		}
		return f
	})
}

func answerAddrs(r lookupResult) []netip.Addr {
	if r.err != nil {
		return nil
	}
	return r.ans.Addrs
}

// probeSkip says why there is nothing to probe ("" when there is).
func (ev *evaluation) probeSkip(ctx context.Context) string {
	if reason := ev.domainSkip(); reason != "" {
		return reason
	}
	if reason := ev.mxSet(ctx).unusableReason(); reason != "" {
		return reason
	}
	for _, t := range ev.mxTargets(ctx) {
		if t.usable() {
			return ""
		}
	}
	return "no usable MX target to probe"
}

// unusableReason says why there are no MX targets to examine ("" when there are).
func (f mxFacts) unusableReason() string {
	switch {
	case f.answer.err != nil || f.implicitErr != nil:
		return "the MX lookup did not complete"
	case f.nullMX:
		return "the domain has a null MX"
	case len(f.hosts) == 0:
		return "the domain has no mail exchanger"
	}
	return ""
}

// target is one MX host and what its lookups found; mx.targets judges it.
type target struct {
	mxHost
	allowed  bool         // in policy.allow_mx_hosts: trusted, not probed
	literal  bool         // an IP address written as a host name: not looked up
	alias    string       // the canonical name, when the target is a CNAME
	temp     error        // its lookup failed: undecided
	nxdomain bool         // the name does not exist
	addrs    []netip.Addr // addresses that may be probed, v4 and v6 interleaved
	excluded []string     // special-purpose addresses left out, with why
}

// usable reports whether mail can go to the target: probes go to those.
func (t target) usable() bool {
	return !t.literal && t.temp == nil && (len(t.addrs) > 0 || t.allowed)
}

// undecided reports whether the target's lookup failed before it had a usable address.
func (t target) undecided() bool { return !t.usable() && t.temp != nil }

func (ev *evaluation) mxTargets(ctx context.Context) []target {
	return ev.targets.get(func() []target {
		f := ev.mxSet(ctx)
		if f.unusableReason() != "" {
			return nil
		}
		warm := true
		for _, mx := range f.hosts {
			warm = warm && ev.addressesCached(mx.Host)
		}
		ts := make([]target, len(f.hosts))
		fanOut(ctx, len(ts), warm, func(i int) { ts[i] = ev.resolveTarget(ctx, f.hosts[i], f.implicit) })
		return ts
	})
}

func (ev *evaluation) resolveTarget(ctx context.Context, mx mxHost, implicit bool) target {
	t := target{mxHost: mx, allowed: ev.e.cfg.Policy.MXHostAllowed(mx.Host)}
	if t.allowed {
		return t
	}
	if t.literal = isIPLiteralName(mx.Host); t.literal {
		return t
	}
	a, aaaa := ev.lookupBoth(ctx, mx.Host)
	if !implicit { // every major MTA follows the CNAME: probe where it leads
		for _, r := range []lookupResult{a, aaaa} {
			if r.err == nil && len(r.ans.Aliases) > 0 {
				t.alias = r.ans.Aliases[len(r.ans.Aliases)-1]
			}
		}
	}
	v4, v6 := answerAddrs(a), answerAddrs(aaaa)
	for i := 0; i < max(len(v4), len(v6)); i++ {
		for _, list := range [][]netip.Addr{v4, v6} {
			if i >= len(list) {
				continue
			}
			if ip := list[i]; ev.e.raw.Allowed(ip) {
				t.addrs = append(t.addrs, ip)
			} else {
				t.excluded = append(t.excluded, fmt.Sprintf("%s (%s)", ip, specialPurpose(ip)))
			}
		}
	}
	switch {
	case len(t.addrs) > 0:
	case a.err != nil: // the failed lookup might have given a usable address
		t.temp = a.err
	case aaaa.err != nil:
		t.temp = aaaa.err
	default:
		t.nxdomain = a.ans.Kind == kindNXDomain
	}
	return t
}

// isIPLiteralName reports whether an MX target is an IP address written as a
// name ("192.0.2.1.") or as an address literal.
func isIPLiteralName(host string) bool {
	if strings.HasPrefix(host, "[") {
		return true
	}
	// Only an IPv6 address has a colon, and an IPv4 address ends in a
	// digit: the rest, most names, need not pay for ParseAddr's error.
	if !strings.Contains(host, ":") && (host == "" || !isDigit(host[len(host)-1])) {
		return false
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// outbound reports whether ip is one of this relay's egress addresses:
// outbound.ips, or the connecting client unless it is in
// identity.skip_networks (an authenticated or allow-listed client still
// sends from its address).
func (ev *evaluation) outbound(ip netip.Addr) bool {
	return inPrefixes(ip, ev.e.cfg.OutboundIPs) ||
		ev.client.IsValid() && ip == ev.client && !inPrefixes(ev.client, ev.e.cfg.SkipIdentityNetworks)
}

// probedTargets are the targets probed: the probe.max_hosts most preferred
// usable ones, as an MTA would try them.
func (ev *evaluation) probedTargets(ctx context.Context) []target {
	var ts []target
	for _, t := range ev.mxTargets(ctx) {
		if t.usable() && len(ts) < ev.e.cfg.Probe.MaxHosts {
			ts = append(ts, t)
		}
	}
	return ts
}

// probeResults probes, in parallel, the first probe.max_addrs_per_host
// addresses of each probed target, and every usable address that is an
// outbound IP.
func (ev *evaluation) probeResults(ctx context.Context) map[netip.Addr]probeResult {
	return ev.probes.get(func() map[netip.Addr]probeResult {
		var todo []netip.Addr
		seen := map[netip.Addr]bool{}
		probed := map[string]bool{}
		for _, t := range ev.probedTargets(ctx) {
			probed[t.Host] = true
		}
		for _, t := range ev.mxTargets(ctx) {
			if !t.usable() || t.allowed {
				continue
			}
			for i, ip := range t.addrs {
				if !probed[t.Host] && !ev.outbound(ip) {
					continue
				}
				if (i < ev.e.cfg.Probe.MaxAddrsPerHost || ev.outbound(ip)) && !seen[ip] {
					seen[ip] = true
					todo = append(todo, ip)
				}
			}
		}
		warm := true
		for _, ip := range todo {
			warm = warm && ev.e.prober.cached(ip)
		}
		results := make([]probeResult, len(todo))
		fanOut(ctx, len(todo), warm, func(i int) { results[i] = ev.e.prober.Probe(ctx, todo[i]) })
		m := make(map[netip.Addr]probeResult, len(todo))
		for i, ip := range todo {
			m[ip] = results[i]
		}
		return m
	})
}

// ptrNames is the PTR lookup of the client address (RFC 1912 section 2.1).
func (ev *evaluation) ptrNames(ctx context.Context) lookupResult {
	return ev.ptr.get(func() lookupResult {
		return ev.lookup(ctx, reverseName(ev.client), dns.TypePTR)
	})
}

// fcrdnsFacts is the forward confirmation of the client's PTR names.
type fcrdnsFacts struct {
	confirmed []string // PTR names whose A/AAAA include the client IP
	tried     []string
	temp      error // some forward lookup failed
}

func (ev *evaluation) forwardConfirmed(ctx context.Context) fcrdnsFacts {
	return ev.fcrdns.get(func() fcrdnsFacts {
		var f fcrdnsFacts
		ptr := ev.ptrNames(ctx)
		if ptr.err != nil || ptr.ans.Kind != kindFound {
			return f
		}
		f.tried = ptr.ans.Names
		if len(f.tried) > ev.e.cfg.MaxPTRNames {
			f.tried = f.tried[:ev.e.cfg.MaxPTRNames]
		}
		qtype := dns.TypeA
		if ev.client.Is6() {
			qtype = dns.TypeAAAA
		}
		warm := true
		for _, name := range f.tried {
			warm = warm && ev.e.resolver.cached(name, qtype)
		}
		results := make([]lookupResult, len(f.tried))
		fanOut(ctx, len(f.tried), warm, func(i int) { results[i] = ev.lookup(ctx, f.tried[i], qtype) })
		for i, r := range results {
			if r.err != nil {
				f.temp = errors.Join(f.temp, r.err)
				continue
			}
			for _, ip := range r.ans.Addrs {
				if ip.Unmap() == ev.client {
					f.confirmed = append(f.confirmed, f.tried[i])
					break
				}
			}
		}
		return f
	})
}
