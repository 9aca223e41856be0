package milter_test

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// The resolver dies during a run: warm decisions go on untouched, new ones
// fail open with temperror in the header, and once the resolver is back the
// decisions are whole again.
func TestResolverDiesAndComesBack(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, _ *milter.Options) {
		p.Clock = clock.Now // error_ttl passes when the test says so
	})
	warm := func() string {
		r := h.play(t, goodConn(message("a@ok.test")))[0]
		v, _ := r.Header("X-MXGuard")
		return v
	}
	if got := warm(); got != "pass; domain=ok.test; ip=127.0.3.1" {
		t.Fatalf("before: %q", got)
	}
	addr := h.sb.DNS.Addr
	h.sb.DNS.Close()

	// Warm-cache traffic keeps flowing during the outage.
	stop := make(chan struct{})
	var warmOK, warmBad atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(message("a@ok.test")))
				if err != nil {
					warmBad.Add(1)
					continue
				}
				if v, _ := res[0].Header("X-MXGuard"); v == "pass; domain=ok.test; ip=127.0.3.1" {
					warmOK.Add(1)
				} else {
					warmBad.Add(1)
				}
			}
		}()
	}
	for _, from := range []string{"a@v4.test", "a@554.test"} {
		r := h.play(t, goodConn(message(from)))[0]
		v, _ := r.Header("X-MXGuard")
		if !r.Accepted() || !strings.Contains(v, "mx.records=temperror") {
			t.Errorf("%s during the outage: accepted %v, %q", from, r.Accepted(), v)
		}
	}
	testkit.WaitFor(t, "warm traffic during the outage", func() bool { return warmOK.Load()+warmBad.Load() > 0 })
	close(stop)
	wg.Wait()
	if warmOK.Load() == 0 || warmBad.Load() != 0 {
		t.Errorf("warm decisions during the outage: %d good, %d bad", warmOK.Load(), warmBad.Load())
	}

	restarted, err := smtptest.StartDNSAt(addr, h.sb.Zone)
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	clock.Advance(h.engine.Config().Cache.ErrorTTL) // the failures expire
	for _, from := range []string{"a@v4.test", "a@554.test"} {
		r := h.play(t, goodConn(message(from)))[0]
		if v, _ := r.Header("X-MXGuard"); v != fmt.Sprintf("pass; domain=%s; ip=127.0.3.1", strings.TrimPrefix(from, "a@")) {
			t.Errorf("%s after the outage: %q", from, v)
		}
	}
}

// A flood of sessions for unique, uncached domains whose MX hosts never
// greet: every one fails open, memory and goroutines stay bounded, and
// warm-cache decisions are not starved meanwhile.
func TestFloodOfUncachedDomains(t *testing.T) {
	const greeting = 2 * time.Second
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, o *milter.Options) {
		p.Probe.Concurrency, p.Probe.MaxQueued, p.Probe.QueueTimeout = 8, 16, 200*time.Millisecond
		p.Probe.GreetingTimeout = greeting
		// decision_timeout stays the harness's 5s: a loaded machine can hold
		// a warm decision past a shorter one by CPU alone.
		o.MaxSessions = 2000
	})
	const flood = 600
	for i := 0; i < flood; i++ {
		h.sb.Zone.MX(fmt.Sprintf("f%d.flood.test", i), 10, fmt.Sprintf("mx.f%d.flood.test", i)).
			A(fmt.Sprintf("mx.f%d.flood.test", i), fmt.Sprintf("127.0.12.%d", 1+i%200))
	}
	for i := 0; i < 200; i++ {
		if _, err := h.sb.Serve(fmt.Sprintf("127.0.12.%d", 1+i), smtptest.Silent); err != nil {
			t.Fatal(err)
		}
	}
	h.play(t, goodConn(message("a@ok.test"))) // warm
	runtime.GC()
	goroutines := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap := ms.HeapAlloc

	var wg sync.WaitGroup
	var failOpen atomic.Int64
	for i := 0; i < flood; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(message(fmt.Sprintf("a@f%d.flood.test", i))))
			if err != nil || !res[0].Accepted() {
				t.Errorf("flood %d: %v %+v", i, err, res)
				return
			}
			if v, _ := res[0].Header("X-MXGuard"); strings.Contains(v, "temperror") {
				failOpen.Add(1)
			}
		}()
	}
	var lat []time.Duration
	for i := 0; i < 30; i++ { // warm decisions while the flood runs
		began := time.Now()
		r := h.play(t, goodConn(message("a@ok.test")))[0]
		lat = append(lat, time.Since(began))
		if v, _ := r.Header("X-MXGuard"); v != "pass; domain=ok.test; ip=127.0.3.1" {
			t.Errorf("warm decision during the flood: %q", v)
		}
	}
	wg.Wait()
	// No flood MX host ever greets: each decision is temperror (probe timed
	// out, no probe slot, or the deadline), never a verdict on the domain.
	if n := failOpen.Load(); n != flood {
		t.Errorf("%d of %d flood messages failed open (temperror)", n, flood)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	// A warm decision that waited for a probe slot would end with
	// mx.port25=temperror, and one that waited for the flood's probes would
	// take their greeting timeout. The wall clock also holds the client's
	// connects on a loaded machine, so only its median is held to a bound,
	// half that timeout.
	if p50 := lat[len(lat)/2]; p50 > greeting/2 {
		t.Errorf("warm decisions slow during the flood: p50 %v", p50)
	}
	t.Logf("flood of %d: %d failed open (temperror); warm decisions p50 %v, max %v", flood, failOpen.Load(), lat[len(lat)/2], lat[len(lat)-1])

	// Background probes finish within the engine's budget (6.5s here); then
	// everything is back. Leaked goroutines would stay for good.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && runtime.NumGoroutine() > goroutines+20 {
		time.Sleep(100 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if g := runtime.NumGoroutine(); g > goroutines+20 {
		t.Errorf("%d goroutines after the flood, %d before", g, goroutines)
	}
	if grown := int64(ms.HeapAlloc) - int64(heap); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
}
