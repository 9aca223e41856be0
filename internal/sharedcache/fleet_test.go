package sharedcache_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// timeout is the shared cache's in the tests of how a node copes with a
// failing server; patient is for those about what a node reads and writes,
// so that a loaded machine cannot turn a slow answer into a miss.
const (
	timeout = 50 * time.Millisecond
	patient = 5 * time.Second
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// node is one mxguard of a fleet: an engine with the shared level, which
// waits for Redis up to wait, its configuration changed by each of with.
func node(t *testing.T, sb *smtptest.Sandbox, url string, wait time.Duration, with ...func(*policy.Config)) (*policy.Engine, *sharedcache.Redis) {
	t.Helper()
	shared, err := sharedcache.New(url, wait, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shared.Close)
	cfg := spectest.Config(sb)
	cfg.Shared = shared
	for _, w := range with {
		w(&cfg)
	}
	e, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the shared cache to connect", shared.Up)
	return e, shared
}

// admin is a plain client for looking at and tampering with the server.
func admin(t *testing.T, srv *redislab.Server) rueidis.Client {
	t.Helper()
	opt, _ := rueidis.ParseURL(srv.URL)
	return redislab.Client(t, opt)
}

func exists(t *testing.T, c rueidis.Client, key string) bool {
	n, err := c.Do(context.Background(), c.B().Exists().Key(key).Build()).AsInt64()
	return err == nil && n == 1
}

const mxKey = "mxguard:v1:dns:15:" // + domain

// A second node makes no DNS query and no probe for a domain the first
// decided.
func TestSecondNodeAsksNobody(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	a, _ := node(t, sb, srv.URL, patient)
	b, _ := node(t, sb, srv.URL, patient)
	mx, err := sb.Serve("127.0.20.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("fleet.test", 10, "mx.fleet.test").A("mx.fleet.test", "127.0.20.1")
	spectest.Passing(sb.Zone, "fleet.test")
	req := policy.Request{Sender: "a@fleet.test", ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "mail.good.test"}
	if r := a.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		t.Fatalf("first node: %s", spectest.Findings(r.Checks))
	}
	c := admin(t, srv)
	testkit.WaitFor(t, "the first node's answers to reach the shared cache", func() bool {
		return exists(t, c, mxKey+"fleet.test") && exists(t, c, "mxguard:v1:probe:"+fmt.Sprint(sb.Port)+":127.0.20.1")
	})
	queries, probes := sb.DNS.Queries(), mx.Connections()
	r := b.Evaluate(context.Background(), req)
	if r.Verdict() != policy.Pass || sb.DNS.Queries() != queries || mx.Connections() != probes {
		t.Errorf("second node: %s, %d DNS queries, %d probes", r.Verdict(), sb.DNS.Queries()-queries, mx.Connections()-probes)
	}
	if st := b.SharedStats(); st.DNS.Hits == 0 || st.Probe.Hits != 1 {
		t.Errorf("shared stats %+v", st)
	}
}

// Concurrent misses on three nodes probe a remote MX once: one node takes
// the address's lock, the others wait for its result.
func TestOneProbeAcrossTheFleet(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	var nodes []*policy.Engine
	for i := 0; i < 3; i++ {
		e, _ := node(t, sb, srv.URL, patient)
		nodes = append(nodes, e)
	}
	mx, err := sb.Serve("127.0.20.2", smtptest.SlowGreeting(300*time.Millisecond)) // long enough to overlap
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("herd.fleet.test", 10, "mx.herd.fleet.test").A("mx.herd.fleet.test", "127.0.20.2")
	var wg sync.WaitGroup
	for _, e := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.Evaluate(context.Background(), policy.Request{Domain: "herd.fleet.test"}); r.Check(policy.MXPort25).Status != policy.StatusPass {
				t.Errorf("mx.port25 %s", r.Check(policy.MXPort25).Detail)
			}
		}()
	}
	wg.Wait()
	if n := mx.Connections(); n != 1 {
		t.Errorf("the MX was probed %d times by the fleet", n)
	}
	waits := uint64(0)
	for _, e := range nodes {
		waits += e.SharedStats().LockWaits
	}
	if waits != 2 {
		t.Errorf("%d nodes waited for the lock holder, want 2", waits)
	}
}

// Redis killed mid-run: decisions go on from the local level, each adding
// at most about the shared timeout; once it is back, it is used again.
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	e, shared := node(t, sb, srv.URL, timeout)
	local := localOnly(t, sb)
	srv.Kill()
	for i := 0; i < 20; i++ {
		domain := fmt.Sprintf("d%d.down.test", i)
		sb.Zone.MX(domain, 10, "mx.accept.test")
		withShared, alone := timed(e, domain), timed(local, "x"+domain)
		sb.Zone.MX("x"+domain, 10, "mx.accept.test")
		if withShared > alone+10*timeout {
			t.Errorf("%s: %v with a dead shared cache, %v without one", domain, withShared, alone)
		}
	}
	if shared.Up() {
		t.Error("the shared cache says it is up")
	}
	srv.Restart(t)
	testkit.WaitFor(t, "the breaker to close again", func() bool {
		e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("back%d.test", time.Now().UnixNano())})
		return shared.Up()
	})
	// A decision that waits too long on a loaded machine opens the breaker
	// again, and the writes meanwhile are dropped: decide until one lands.
	c := admin(t, srv)
	var decided []string
	testkit.WaitFor(t, "a write after the restart", func() bool {
		for _, d := range decided {
			if exists(t, c, mxKey+d) {
				return true
			}
		}
		d := fmt.Sprintf("after%d.test", len(decided))
		sb.Zone.MX(d, 10, "mx.accept.test")
		e.Evaluate(context.Background(), policy.Request{Domain: d})
		decided = append(decided, d)
		return false
	})
}

// A wedged Redis (SIGSTOP: connections open, no answers) costs one
// timeout, then the breaker stops asking it.
func TestRedisPausedIsBounded(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	e, shared := node(t, sb, srv.URL, timeout)
	srv.Pause(t)
	defer srv.Resume(t)
	for i := 0; i < 10; i++ {
		domain := fmt.Sprintf("d%d.paused.test", i)
		sb.Zone.MX(domain, 10, "mx.accept.test")
		if took := timed(e, domain); took > 2*time.Second { // the probe timeouts are 300+600 ms; a stall would be far longer
			t.Errorf("%s took %v with a wedged shared cache", domain, took)
		}
	}
	if shared.Up() || shared.Errors() == 0 {
		t.Errorf("up %v, %d errors", shared.Up(), shared.Errors())
	}
}

// A stall while a probe lock is held opens the breaker; releasing the lock
// may then be the call that tries the server again, and its outcome counts
// like any other's: once Redis answers, the node uses the fleet cache again.
func TestBreakerClosesAfterAStallDuringALock(t *testing.T) {
	srv := redislab.Start(t)
	shared, err := sharedcacheNew(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	testkit.WaitFor(t, "the shared cache to connect", shared.Up)
	ctx := context.Background()
	unlock, mine := shared.Lock(ctx, "lock:k", time.Minute)
	if !mine {
		t.Fatal("the lock of an idle server was not ours")
	}
	srv.Pause(t)
	if _, ok := shared.Get(ctx, "k", 64); ok || shared.Up() {
		t.Fatalf("a wedged server answered, or the breaker stayed closed (up %v)", shared.Up())
	}
	srv.Resume(t)
	testkit.WaitFor(t, "the breaker's cool-down", shared.TrialDue)
	unlock()
	c := admin(t, srv)
	if err := c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the node to read the fleet cache again", func() bool {
		v, ok := shared.Get(ctx, "k", 64)
		return ok && string(v) == "v" && shared.Up()
	})
}

// Values are untrusted input: garbage, oversized, far-future or
// inconsistent values are refused and the answer is looked up instead.
func TestGarbageValuesAreRefused(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	e, _ := node(t, sb, srv.URL, patient)
	c := admin(t, srv)
	future := time.Now().Add(48 * time.Hour).UnixMilli()
	soon := time.Now().Add(time.Minute).UnixMilli()
	for domain, value := range map[string]string{
		"junk.test":     "not json at all",
		"huge.test":     `{"v":2,"exp":` + fmt.Sprint(soon) + `,"k":0,"t":["` + strings.Repeat("x", 100<<10) + `"]}`,
		"future.test":   `{"v":2,"exp":` + fmt.Sprint(future) + `,"k":0,"mx":[{"p":10,"h":"evil.example"}]}`,
		"negative.test": `{"v":2,"exp":` + fmt.Sprint(soon) + `,"k":1,"mx":[{"p":10,"h":"evil.example"}]}`,
		"control.test":  `{"v":2,"exp":` + fmt.Sprint(soon) + `,"k":0,"mx":[{"p":10,"h":"evil\r\nexample"}]}`,
		"version.test":  `{"v":9,"exp":` + fmt.Sprint(soon) + `,"k":0,"mx":[{"p":10,"h":"mx.accept.test"}]}`,
		"unknown.test":  `{"v":2,"exp":` + fmt.Sprint(soon) + `,"k":0,"mx":[],"extra":1}`,
	} {
		sb.Zone.MX(domain, 10, "mx.accept.test")
		if err := c.Do(context.Background(), c.B().Set().Key(mxKey+domain).Value(value).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		queries := sb.DNS.QueryCount(domain, 15)
		r := e.Evaluate(context.Background(), policy.Request{Domain: domain})
		if got := r.Check(policy.MXRecords); got.Status != policy.StatusPass || !strings.Contains(got.Detail, "mx.accept.test") {
			t.Errorf("%s: mx.records %s %q", domain, got.Status, got.Detail)
		}
		if sb.DNS.QueryCount(domain, 15) != queries+1 {
			t.Errorf("%s: the garbage was believed (no DNS query)", domain)
		}
	}
	if g := e.SharedStats().Garbage; g != 7 {
		t.Errorf("%d values refused, want 7", g)
	}
}

// A value over the size cap is a miss, counted, and never crosses the wire
// whole: the node reads no more than the cap.
func TestOversizedValuesAreNotRead(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	e, _ := node(t, sb, srv.URL, patient)
	c := admin(t, srv)
	soon := time.Now().Add(time.Minute).UnixMilli()
	value := `{"v":2,"exp":` + fmt.Sprint(soon) + `,"k":0,"t":["` + strings.Repeat("x", 8<<20) + `"]}`
	if err := c.Do(context.Background(), c.B().Set().Key(mxKey+"oversized.test").Value(value).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("oversized.test", 10, "mx.accept.test")
	sent := netOutput(t, c)
	r := e.Evaluate(context.Background(), policy.Request{Domain: "oversized.test"})
	sent = netOutput(t, c) - sent
	if got := r.Check(policy.MXRecords); got.Status != policy.StatusPass || !strings.Contains(got.Detail, "mx.accept.test") {
		t.Errorf("mx.records %s %q", got.Status, got.Detail)
	}
	if g := e.SharedStats().Garbage; g != 1 {
		t.Errorf("%d values refused, want 1", g)
	}
	if sent > 256<<10 {
		t.Errorf("Redis sent %d octets for one decision", sent)
	}
}

// netOutput is what the server has sent its clients so far (INFO stats).
func netOutput(t *testing.T, c rueidis.Client) int64 {
	t.Helper()
	info, err := c.Do(context.Background(), c.B().Info().Section("stats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no total_net_output_bytes in INFO stats:\n%s", info)
	return 0
}

// A shared value lives on a node no longer than the node's own limit for
// its kind: a forged NXDOMAIN that claims 59 minutes is kept for
// cache.negative_max_ttl, a forged refusal for cache.probe_refused_ttl.
func TestSharedLifetimesCappedByKind(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	clock := testkit.NewClock(time.Now())
	e, _ := node(t, sb, srv.URL, patient, func(c *policy.Config) { c.Clock, c.Cache.Prefetch = clock.Now, false })
	if _, err := sb.Serve("127.0.20.5", smtptest.Accept); err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("capped-nx.test", 10, "mx.accept.test")
	sb.Zone.MX("capped-probe.test", 10, "mx.capped-probe.test").A("mx.capped-probe.test", "127.0.20.5")
	exp := fmt.Sprint(clock.Now().Add(59 * time.Minute).UnixMilli())
	c := admin(t, srv)
	forged := map[string]string{
		mxKey + "capped-nx.test":                                  `{"v":2,"exp":` + exp + `,"k":1,"tk":true}`,
		"mxguard:v1:probe:" + fmt.Sprint(sb.Port) + ":127.0.20.5": `{"v":2,"exp":` + exp + `,"o":2,"d":"connection refused"}`,
	}
	for k, v := range forged {
		if err := c.Do(context.Background(), c.B().Set().Key(k).Value(v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	believed := func(when string, nx, refused bool) {
		t.Helper()
		if got := e.Evaluate(context.Background(), policy.Request{Domain: "capped-nx.test"}).Check(policy.MXRecords); (got.Status != policy.StatusPass) != nx {
			t.Errorf("%s: mx.records %s %q; the forged NXDOMAIN believed: %v", when, got.Status, got.Detail, !nx)
		}
		if got := e.Evaluate(context.Background(), policy.Request{Domain: "capped-probe.test"}).Check(policy.MXPort25); (got.Status != policy.StatusPass) != refused {
			t.Errorf("%s: mx.port25 %s %q; the forged refusal believed: %v", when, got.Status, got.Detail, !refused)
		}
	}
	believed("at first", true, true)
	for k := range forged { // what the node holds now is all it has of them
		if err := c.Do(context.Background(), c.B().Del().Key(k).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(9 * time.Minute)
	believed("9 minutes on", true, true)
	clock.Advance(time.Minute + time.Second) // past cache.probe_refused_ttl (10m)
	believed("10 minutes on", true, false)
	clock.Advance(5 * time.Minute) // past cache.negative_max_ttl (15m)
	believed("15 minutes on", false, false)
}

// With cache.shared.key, a value without the fleet's HMAC is refused and
// counted: a forged "accepts" for a refusing MX, unsigned, signed with
// another key or replayed from another address's key, is not believed and
// the host is probed for real. A node without a key reads signed values,
// and what one node signs another reads.
func TestForgedValuesAreRefused(t *testing.T) {
	srv := redislab.Start(t)
	forgedValues(t, srv.URL, admin(t, srv), "mxguard:v1:")
}

// forgedValues is TestForgedValuesAreRefused on the servers at url, which
// c tampers with, under the key prefix.
func forgedValues(t *testing.T, url string, c rueidis.Client, prefix string) {
	sb := spectest.Sandbox(t)
	fleetKey, otherKey := "a long random secret that every node of the fleet has", "another secret"
	accepts := `{"v":2,"exp":` + fmt.Sprint(time.Now().Add(time.Minute).UnixMilli()) + `,"o":0,"c":220,"g":"220 forged.example ESMTP"}`
	for i, tc := range []struct {
		name     string
		nodeKey  string
		value    func(probeKey string) string
		believed bool
	}{
		{"signed with the fleet's key", fleetKey, func(k string) string { return sign(fleetKey, k, accepts) }, true},
		{"unsigned", fleetKey, func(string) string { return accepts }, false},
		{"signed with another key", fleetKey, func(k string) string { return sign(otherKey, k, accepts) }, false},
		{"signed for another address", fleetKey, func(k string) string { return sign(fleetKey, k+"0", accepts) }, false},
		{"signed, read without a key", "", func(k string) string { return sign(fleetKey, k, accepts) }, true},
	} {
		// An address and domain per case: each node writes what it probed.
		ip, domain := fmt.Sprintf("127.0.21.%d", i+1), fmt.Sprintf("forged%d.test", i)
		if err := sb.Closed(ip); err != nil {
			t.Fatal(err)
		}
		sb.Zone.MX(domain, 10, "mx."+domain).A("mx."+domain, ip)
		probeKey := fmt.Sprintf("%sprobe:%d:%s", prefix, sb.Port, ip)
		e, _ := node(t, sb, url, patient, func(c *policy.Config) { c.SharedKey, c.SharedPrefix = tc.nodeKey, prefix })
		if err := c.Do(context.Background(), c.B().Set().Key(probeKey).Value(tc.value(probeKey)).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		got := e.Evaluate(context.Background(), policy.Request{Domain: domain}).Check(policy.MXPort25)
		if believed := strings.Contains(got.Detail, "forged.example"); believed != tc.believed || (got.Status == policy.StatusPass) != tc.believed {
			t.Errorf("%s: mx.port25 %s %q", tc.name, got.Status, got.Detail)
		}
		st := e.SharedStats()
		if refused := map[bool]uint64{false: 1}[tc.believed]; st.BadSignature != refused || st.Garbage != 0 {
			t.Errorf("%s: %d values refused for their HMAC, %d as malformed; want %d and 0", tc.name, st.BadSignature, st.Garbage, refused)
		}
	}
	signing := func(c *policy.Config) { c.SharedKey, c.SharedPrefix = fleetKey, prefix }
	a, _ := node(t, sb, url, patient, signing)
	b, _ := node(t, sb, url, patient, signing)
	mx, err := sb.Serve("127.0.21.9", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("signed.test", 10, "mx.signed.test").A("mx.signed.test", "127.0.21.9")
	if got := a.Evaluate(context.Background(), policy.Request{Domain: "signed.test"}).Check(policy.MXPort25); got.Status != policy.StatusPass {
		t.Fatalf("the signing node: mx.port25 %s %q", got.Status, got.Detail)
	}
	dnsKey, probeKey := prefix+"dns:15:signed.test", fmt.Sprintf("%sprobe:%d:127.0.21.9", prefix, sb.Port)
	testkit.WaitFor(t, "the signed values in the shared cache", func() bool { return exists(t, c, dnsKey) && exists(t, c, probeKey) })
	v, err := c.Do(context.Background(), c.B().Get().Key(probeKey).Build()).ToString()
	if err != nil || sign(fleetKey, probeKey, v[min(64, len(v)):]) != v {
		t.Errorf("the probe result is not stored signed: %q %v", v, err)
	}
	queries, probes := sb.DNS.QueryCount("signed.test", 15), mx.Connections()
	if got := b.Evaluate(context.Background(), policy.Request{Domain: "signed.test"}).Check(policy.MXPort25); got.Status != policy.StatusPass {
		t.Errorf("the reading node: mx.port25 %s %q", got.Status, got.Detail)
	}
	if st := b.SharedStats(); sb.DNS.QueryCount("signed.test", 15) != queries || mx.Connections() != probes || st.BadSignature != 0 || st.Probe.Hits != 1 {
		t.Errorf("the reading node asked again: %d MX queries, %d probes; shared stats %+v",
			sb.DNS.QueryCount("signed.test", 15)-queries, mx.Connections()-probes, st)
	}
}

// sign is value as a node with key stores it under redisKey: the hex
// HMAC-SHA256 of the key's length, the key and the value, then the value.
func sign(key, redisKey, value string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(redisKey))))
	m.Write([]byte(redisKey))
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil)) + value
}

// Keys expire with the DNS TTL (clamped like the local cache's), so every
// node drops an answer at the same time.
func TestKeysExpireWithTheDNSTTL(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	e, _ := node(t, sb, srv.URL, patient)
	sb.Zone.MustAdd("ttl.test. 200 IN MX 10 mx.accept.test.", "short.test. 5 IN MX 10 mx.accept.test.")
	e.Evaluate(context.Background(), policy.Request{Domain: "ttl.test"})
	e.Evaluate(context.Background(), policy.Request{Domain: "short.test"})
	c := admin(t, srv)
	for domain, want := range map[string]time.Duration{"ttl.test": 200 * time.Second, "short.test": time.Minute /* cache.min_ttl */} {
		testkit.WaitFor(t, domain+" in the shared cache", func() bool { return exists(t, c, mxKey+domain) })
		ms, err := c.Do(context.Background(), c.B().Pttl().Key(mxKey+domain).Build()).AsInt64()
		if got := time.Duration(ms) * time.Millisecond; err != nil || got > want || got < want-10*time.Second {
			t.Errorf("%s: expires in %v, want %v", domain, got, want)
		}
	}
}

// A password in the URL authenticates, and is never logged.
func TestAuthAndRedaction(t *testing.T) {
	srv := redislab.Start(t, "requirepass", "s3cret-pw")
	var log testkit.SyncBuffer
	shared, err := sharedcache.New(strings.Replace(srv.URL, "redis://", "redis://:s3cret-pw@", 1), patient, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	testkit.WaitFor(t, "an authenticated connection", shared.Up)
	shared.Set("k", []byte("v"), time.Minute)
	testkit.WaitFor(t, "the write", func() bool { v, ok := shared.Get(context.Background(), "k", 64); return ok && string(v) == "v" })
	if strings.Contains(log.String(), "s3cret-pw") || !strings.Contains(log.String(), "xxxxx") {
		t.Errorf("the log shows the password, or no redacted URL:\n%s", log.String())
	}
	wrong, err := sharedcache.New(strings.Replace(srv.URL, "redis://", "redis://:wrong@", 1), timeout, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, ok := wrong.Get(context.Background(), "k", 64); ok || wrong.Up() {
		t.Error("a wrong password was let in")
	}
}

func localOnly(t *testing.T, sb *smtptest.Sandbox) *policy.Engine {
	t.Helper()
	e, err := policy.New(spectest.Config(sb))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func timed(e *policy.Engine, domain string) time.Duration {
	began := time.Now()
	e.Evaluate(context.Background(), policy.Request{Domain: domain})
	return time.Since(began)
}

func sharedcacheNew(url string) (*sharedcache.Redis, error) {
	return sharedcache.New(url, timeout, quiet)
}
