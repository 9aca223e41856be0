package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// SharedCache is a second cache level shared by a fleet of mxguards (Redis
// or Valkey, cache.shared.url). It is an accelerator, never a dependency:
// every call returns within the cache's own timeout, a failure is a miss,
// and Set never blocks.
type SharedCache interface {
	// Get returns the value stored under key, if any, cut after limit
	// octets: a longer one is refused without being read whole.
	Get(ctx context.Context, key string, limit int) ([]byte, bool)
	// Set stores value under key for ttl, in the background.
	Set(key string, value []byte, ttl time.Duration)
	// Lock takes the short lock key for ttl. ok is false when another
	// holder has it, or when the cache cannot say; unlock releases it only
	// while this caller still holds it.
	Lock(ctx context.Context, key string, ttl time.Duration) (unlock func(), ok bool)
}

// Shared values are JSON, versioned, with the absolute expiry that every
// node serves them until. They are untrusted input: decoded strictly,
// bounded in size and content, their lifetimes capped.
const (
	sharedVersion  = 1
	maxSharedValue = 64 << 10
)

// sharedDNS is a DNS answer in the shared cache.
type sharedDNS struct {
	V        int          `json:"v"`
	Expires  int64        `json:"exp"` // Unix milliseconds
	Kind     AnswerKind   `json:"k"`
	TTLKnown bool         `json:"tk,omitempty"`
	Aliases  []string     `json:"a,omitempty"`
	MX       []sharedMX   `json:"mx,omitempty"`
	Addrs    []netip.Addr `json:"ip,omitempty"`
	Names    []string     `json:"n,omitempty"`
	TXT      []string     `json:"t,omitempty"`
}

type sharedMX struct {
	Pref uint16 `json:"p"`
	Host string `json:"h"`
}

// sharedProbe is a probe result in the shared cache.
type sharedProbe struct {
	V        int     `json:"v"`
	Expires  int64   `json:"exp"`
	Outcome  Outcome `json:"o"`
	Code     int     `json:"c,omitempty"`
	Greeting string  `json:"g,omitempty"`
	Detail   string  `json:"d,omitempty"`
}

func dnsSharedKey(prefix string, k dnsKey) string {
	return prefix + "dns:" + strconv.Itoa(int(k.qtype)) + ":" + k.name
}

func probeSharedKey(prefix string, port uint16, ip netip.Addr) string {
	return prefix + "probe:" + strconv.Itoa(int(port)) + ":" + ip.String()
}

func encodeDNS(a *Answer, expires time.Time) []byte {
	v := sharedDNS{V: sharedVersion, Expires: expires.UnixMilli(), Kind: a.Kind, TTLKnown: a.TTLKnown,
		Aliases: a.Aliases, Addrs: a.Addrs, Names: a.Names, TXT: a.TXT}
	for _, mx := range a.MX {
		v.MX = append(v.MX, sharedMX{mx.Pref, mx.Host})
	}
	b, _ := json.Marshal(v)
	return b
}

// decodeDNS checks a shared DNS value and returns the answer and how long
// it still lives (at most maxTTL).
func decodeDNS(b []byte, now time.Time, maxTTL time.Duration) (*Answer, time.Duration, error) {
	var v sharedDNS
	if err := strictJSON(b, &v); err != nil {
		return nil, 0, err
	}
	ttl, err := remaining(v.V, v.Expires, now, maxTTL)
	if err != nil {
		return nil, 0, err
	}
	switch {
	case v.Kind > NoData:
		return nil, 0, fmt.Errorf("answer kind %d", v.Kind)
	case len(v.Aliases) > 64 || len(v.MX) > maxMXRecords || len(v.Addrs) > maxAddrRecords ||
		len(v.Names) > maxPTRRecords || len(v.TXT) > maxTXTRecords:
		return nil, 0, fmt.Errorf("more records than an answer may hold")
	case v.Kind != Found && len(v.MX)+len(v.Addrs)+len(v.Names)+len(v.TXT) > 0:
		return nil, 0, fmt.Errorf("records in a negative answer")
	}
	a := &Answer{Kind: v.Kind, TTL: ttl, TTLKnown: v.TTLKnown, Addrs: v.Addrs, TXT: v.TXT}
	for _, s := range append(append([]string{}, v.Aliases...), v.Names...) {
		if !cleanName(s) {
			return nil, 0, fmt.Errorf("name %q", Printable(s, 60))
		}
	}
	a.Aliases, a.Names = v.Aliases, v.Names
	for _, mx := range v.MX {
		if mx.Host != "" && !cleanName(mx.Host) {
			return nil, 0, fmt.Errorf("MX host %q", Printable(mx.Host, 60))
		}
		a.MX = append(a.MX, MX{mx.Pref, mx.Host})
	}
	for _, ip := range a.Addrs {
		if !ip.IsValid() || ip.Zone() != "" {
			return nil, 0, fmt.Errorf("address %v", ip)
		}
	}
	for _, t := range a.TXT {
		if len(t) > maxTXTLength {
			return nil, 0, fmt.Errorf("a TXT record of %d octets", len(t))
		}
	}
	return a, ttl, nil
}

func encodeProbe(r ProbeResult, expires time.Time) []byte {
	b, _ := json.Marshal(sharedProbe{sharedVersion, expires.UnixMilli(), r.Outcome, r.Code, r.Greeting, r.Detail})
	return b
}

// decodeProbe checks a shared probe value.
func decodeProbe(b []byte, now time.Time, maxTTL time.Duration) (ProbeResult, time.Duration, error) {
	var v sharedProbe
	if err := strictJSON(b, &v); err != nil {
		return ProbeResult{}, 0, err
	}
	ttl, err := remaining(v.V, v.Expires, now, maxTTL)
	if err != nil {
		return ProbeResult{}, 0, err
	}
	switch {
	case int(v.Outcome) >= len(outcomeNames) || v.Outcome == OutcomeNotAllowed || v.Outcome == OutcomeAbandoned:
		return ProbeResult{}, 0, fmt.Errorf("outcome %d", v.Outcome)
	case v.Code != 0 && (v.Code < 200 || v.Code > 599), v.Outcome.SpeaksSMTP() != (v.Code != 0):
		return ProbeResult{}, 0, fmt.Errorf("reply code %d for %s", v.Code, v.Outcome)
	case len(v.Greeting) > 200 || len(v.Detail) > 400:
		return ProbeResult{}, 0, fmt.Errorf("over-long text")
	}
	return ProbeResult{Outcome: v.Outcome, Code: v.Code, Greeting: Printable(v.Greeting, 200), Detail: Printable(v.Detail, 400)}, ttl, nil
}

// strictJSON decodes one bounded JSON object with no unknown fields.
func strictJSON(b []byte, v any) error {
	if len(b) > maxSharedValue {
		return fmt.Errorf("a value of more than %d octets", maxSharedValue)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// remaining is how long a value expiring at the Unix millisecond exp still
// lives, refused past maxTTL (a clock or a writer gone wrong) or for another
// version.
func remaining(version int, exp int64, now time.Time, maxTTL time.Duration) (time.Duration, error) {
	if version != sharedVersion {
		return 0, fmt.Errorf("version %d", version)
	}
	ttl := time.UnixMilli(exp).Sub(now)
	switch {
	case ttl <= 0:
		return 0, fmt.Errorf("expired")
	case ttl > maxTTL:
		return 0, fmt.Errorf("lives %v, more than %v", ttl, maxTTL)
	}
	return ttl, nil
}

// cleanName reports whether s can be a DNS name from an answer.
func cleanName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// sharedLevel is the fleet cache as the engine uses it: keys under its
// prefix, values checked, traffic counted.
type sharedLevel struct {
	cache  SharedCache
	prefix string
	now    func() time.Time
	// hits and misses count lookups by kind ("dns", "probe"); garbage counts
	// values refused as malformed; lockWaits the probes another node had.
	dnsCounter, probeCounter *hitCounter
	garbage, lockWaits       atomic.Uint64
}

func (s *sharedLevel) dns(ctx context.Context, key string, maxTTL time.Duration) (*Answer, time.Duration, bool) {
	a, ttl, ok := read(s, ctx, key, maxTTL, decodeDNS)
	s.dnsCounter.count(ok)
	return a, ttl, ok
}

func (s *sharedLevel) probe(ctx context.Context, key string, maxTTL time.Duration) (ProbeResult, time.Duration, bool) {
	r, ttl, ok := read(s, ctx, key, maxTTL, decodeProbe)
	s.probeCounter.count(ok)
	return r, ttl, ok
}

// read gets key's value and checks it; a refused value counts as garbage,
// and is a miss like a missing one.
func read[T any](s *sharedLevel, ctx context.Context, key string, maxTTL time.Duration,
	decode func([]byte, time.Time, time.Duration) (T, time.Duration, error)) (T, time.Duration, bool) {
	var zero T
	b, ok := s.cache.Get(ctx, key, maxSharedValue+1)
	if !ok {
		return zero, 0, false
	}
	v, ttl, err := decode(b, s.now(), maxTTL)
	if err != nil {
		s.garbage.Add(1)
		return zero, 0, false
	}
	return v, ttl, true
}

// awaitProbe waits, until deadline, for another node's probe result.
func (s *sharedLevel) awaitProbe(ctx context.Context, key string, deadline time.Time, maxTTL time.Duration) (ProbeResult, time.Duration, bool) {
	s.lockWaits.Add(1)
	for wait := 10 * time.Millisecond; time.Now().Add(wait).Before(deadline); wait = min(2*wait, 200*time.Millisecond) {
		time.Sleep(wait)
		if r, ttl, ok := read(s, ctx, key, maxTTL, decodeProbe); ok {
			s.probeCounter.hit()
			return r, ttl, true
		}
	}
	return ProbeResult{}, 0, false
}

// SharedStats counts the fleet cache's traffic, for metrics.
type SharedStats struct {
	DNS, Probe         CacheStats
	Garbage, LockWaits uint64
}

// SharedStats reports the fleet cache's traffic; zero without one.
func (e *Engine) SharedStats() SharedStats {
	s := e.resolver.shared
	if s == nil {
		return SharedStats{}
	}
	return SharedStats{
		DNS:       CacheStats{Hits: s.dnsCounter.hits.Load(), Misses: s.dnsCounter.misses.Load()},
		Probe:     CacheStats{Hits: s.probeCounter.hits.Load(), Misses: s.probeCounter.misses.Load()},
		Garbage:   s.garbage.Load(),
		LockWaits: s.lockWaits.Load(),
	}
}
