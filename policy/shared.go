package policy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
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
// node serves them until; when the fleet signs (cache.shared.key), the hex
// HMAC-SHA256 of the value and of the key it is stored under comes first.
// They are untrusted input: their HMAC checked, decoded strictly, bounded
// in size and content, their lifetimes capped by what this node keeps.
// Version 2 added the HMAC: nodes of version 1 refuse these values, and
// these nodes refuse theirs, rather than misread them.
const (
	sharedVersion  = 2
	maxSharedValue = 64 << 10
	macLength      = 2 * sha256.Size // hex
)

// sharedDNS is a DNS answer in the shared cache.
type sharedDNS struct {
	V        int          `json:"v"`
	Expires  int64        `json:"exp"` // Unix milliseconds
	Kind     answerKind   `json:"k"`
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

func encodeDNS(a *dnsAnswer, expires time.Time) []byte {
	v := sharedDNS{V: sharedVersion, Expires: expires.UnixMilli(), Kind: a.Kind, TTLKnown: a.TTLKnown,
		Aliases: a.Aliases, Addrs: a.Addrs, Names: a.Names, TXT: a.TXT}
	for _, mx := range a.MX {
		v.MX = append(v.MX, sharedMX{mx.Pref, mx.Host})
	}
	b, _ := json.Marshal(v)
	return b
}

// decodeDNS checks a shared DNS value and returns the answer and how long
// this node keeps it: what it has left, at most the local limit for its kind.
func decodeDNS(b []byte, now time.Time, limits CacheConfig) (*dnsAnswer, time.Duration, error) {
	var v sharedDNS
	if err := strictJSON(b, &v); err != nil {
		return nil, 0, err
	}
	ttl, err := remaining(v.V, v.Expires, now, max(limits.MaxTTL, limits.NegativeMaxTTL, limits.NegativeTTL))
	if err != nil {
		return nil, 0, err
	}
	switch {
	case v.Kind > kindNoData:
		return nil, 0, fmt.Errorf("answer kind %d", v.Kind)
	case len(v.Aliases) > 64 || len(v.MX) > maxMXRecords || len(v.Addrs) > maxAddrRecords ||
		len(v.Names) > maxPTRRecords || len(v.TXT) > maxTXTRecords:
		return nil, 0, fmt.Errorf("more records than an answer may hold")
	case v.Kind != kindFound && len(v.MX)+len(v.Addrs)+len(v.Names)+len(v.TXT) > 0:
		return nil, 0, fmt.Errorf("records in a negative answer")
	}
	a := &dnsAnswer{Kind: v.Kind, TTLKnown: v.TTLKnown, Addrs: v.Addrs, TXT: v.TXT}
	ttl = min(ttl, limits.dnsTTLCap(a))
	a.TTL = ttl
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
		a.MX = append(a.MX, mxHost{mx.Pref, mx.Host})
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

func encodeProbe(r probeResult, expires time.Time) []byte {
	b, _ := json.Marshal(sharedProbe{sharedVersion, expires.UnixMilli(), r.Outcome, r.Code, r.Greeting, r.Detail})
	return b
}

// decodeProbe checks a shared probe value and returns the result and how
// long this node keeps it: at most the local limit for its outcome.
func decodeProbe(b []byte, now time.Time, limits CacheConfig) (probeResult, time.Duration, error) {
	var v sharedProbe
	if err := strictJSON(b, &v); err != nil {
		return probeResult{}, 0, err
	}
	ttl, err := remaining(v.V, v.Expires, now, max(limits.ProbeAcceptTTL, limits.ProbeRefusedTTL, limits.ProbeTimeoutTTL))
	if err != nil {
		return probeResult{}, 0, err
	}
	switch {
	case int(v.Outcome) >= len(outcomeNames) || v.Outcome == OutcomeNotAllowed || v.Outcome == OutcomeAbandoned:
		return probeResult{}, 0, fmt.Errorf("outcome %d", v.Outcome)
	case v.Code != 0 && (v.Code < 200 || v.Code > 599), v.Outcome.SpeaksSMTP() != (v.Code != 0):
		return probeResult{}, 0, fmt.Errorf("reply code %d for %s", v.Code, v.Outcome)
	case len(v.Greeting) > 200 || len(v.Detail) > 400:
		return probeResult{}, 0, fmt.Errorf("over-long text")
	}
	return probeResult{Outcome: v.Outcome, Code: v.Code, Greeting: Printable(v.Greeting, 200), Detail: Printable(v.Detail, 400)},
		min(ttl, limits.probeTTL(v.Outcome)), nil
}

// strictJSON decodes one JSON object with no unknown fields.
func strictJSON(b []byte, v any) error {
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
// lives, refused for another version or past maxTTL, the longest this node
// keeps anything of its kind (a clock or a writer gone wrong).
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
// prefix, values signed and checked, traffic counted.
type sharedLevel struct {
	cache  SharedCache
	prefix string
	// key signs the values written and checks those read; empty: unsigned.
	key    []byte
	limits CacheConfig // what this node keeps, and for how long
	now    func() time.Time
	// hits and misses count lookups by kind ("dns", "probe"); garbage counts
	// values refused as malformed, badSignature those refused for their
	// HMAC; lockWaits the probes another node had.
	dnsCounter, probeCounter         *hitCounter
	garbage, badSignature, lockWaits atomic.Uint64
}

func (s *sharedLevel) dns(ctx context.Context, key string) (*dnsAnswer, time.Duration, bool) {
	a, ttl, ok := read(s, ctx, key, decodeDNS)
	s.dnsCounter.count(ok)
	return a, ttl, ok
}

func (s *sharedLevel) probe(ctx context.Context, key string) (probeResult, time.Duration, bool) {
	r, ttl, ok := read(s, ctx, key, decodeProbe)
	s.probeCounter.count(ok)
	return r, ttl, ok
}

// set writes value under key, signed when the fleet signs.
func (s *sharedLevel) set(key string, value []byte, ttl time.Duration) {
	if len(s.key) > 0 {
		value = append(hex.AppendEncode(nil, s.mac(key, value)), value...)
	}
	s.cache.Set(key, value, ttl)
}

// mac is the HMAC-SHA256 of a value and of the key it is stored under, so
// that a value cannot be replayed under another key; the key's length
// comes first, so that no key and value run into another pair.
func (s *sharedLevel) mac(key string, value []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(key))))
	m.Write([]byte(key))
	m.Write(value)
	return m.Sum(nil)
}

// errSignature refuses a value for its HMAC.
var errSignature = errors.New("no valid HMAC")

// open returns the JSON of the value stored under key, its HMAC checked
// when the fleet signs. A signed value is its HMAC, then the JSON object;
// a node without a key cannot check the HMAC and reads it as if unsigned,
// trusting the fleet cache as it trusts unsigned values.
func (s *sharedLevel) open(key string, b []byte) ([]byte, error) {
	if len(b) > maxSharedValue {
		return nil, fmt.Errorf("a value of more than %d octets", maxSharedValue)
	}
	if len(b) > 0 && b[0] == '{' { // unsigned
		if len(s.key) > 0 {
			return nil, errSignature
		}
		return b, nil
	}
	if len(b) < macLength {
		return nil, fmt.Errorf("neither a JSON object nor an HMAC")
	}
	sum, err := hex.DecodeString(string(b[:macLength]))
	if err != nil {
		return nil, fmt.Errorf("neither a JSON object nor an HMAC")
	}
	value := b[macLength:]
	if len(s.key) > 0 && !hmac.Equal(sum, s.mac(key, value)) {
		return nil, errSignature
	}
	return value, nil
}

// read gets key's value and checks it; a refused value is counted, and is
// a miss like a missing one.
func read[T any](s *sharedLevel, ctx context.Context, key string,
	decode func([]byte, time.Time, CacheConfig) (T, time.Duration, error)) (T, time.Duration, bool) {
	var zero T
	b, ok := s.cache.Get(ctx, key, maxSharedValue+1)
	if !ok {
		return zero, 0, false
	}
	b, err := s.open(key, b)
	if err == nil {
		var v T
		var ttl time.Duration
		if v, ttl, err = decode(b, s.now(), s.limits); err == nil {
			return v, ttl, true
		}
	}
	if errors.Is(err, errSignature) {
		s.badSignature.Add(1)
	} else {
		s.garbage.Add(1)
	}
	return zero, 0, false
}

// awaitProbe waits, until deadline, for another node's probe result.
func (s *sharedLevel) awaitProbe(ctx context.Context, key string, deadline time.Time) (probeResult, time.Duration, bool) {
	s.lockWaits.Add(1)
	for wait := 10 * time.Millisecond; time.Now().Add(wait).Before(deadline); wait = min(2*wait, 200*time.Millisecond) {
		time.Sleep(wait)
		if r, ttl, ok := read(s, ctx, key, decodeProbe); ok {
			s.probeCounter.hit()
			return r, ttl, true
		}
	}
	return probeResult{}, 0, false
}

// SharedStats counts the fleet cache's traffic, for metrics: Garbage the
// values refused as malformed, BadSignature those refused for their HMAC.
type SharedStats struct {
	DNS, Probe                       CacheStats
	Garbage, BadSignature, LockWaits uint64
}

// SharedStats reports the fleet cache's traffic; zero without one.
func (e *Engine) SharedStats() SharedStats {
	s := e.resolver.shared
	if s == nil {
		return SharedStats{}
	}
	return SharedStats{
		DNS:          CacheStats{Hits: s.dnsCounter.hits.Load(), Misses: s.dnsCounter.misses.Load()},
		Probe:        CacheStats{Hits: s.probeCounter.hits.Load(), Misses: s.probeCounter.misses.Load()},
		Garbage:      s.garbage.Load(),
		BadSignature: s.badSignature.Load(),
		LockWaits:    s.lockWaits.Load(),
	}
}
