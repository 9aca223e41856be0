package policy

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

func testProber(t *testing.T, sb *smtptest.Sandbox) *smtpProber {
	t.Helper()
	return newSMTPProber(ProbeConfig{
		Port:            sb.Port,
		ConnectTimeout:  300 * time.Millisecond,
		GreetingTimeout: 500 * time.Millisecond,
		AllowNetworks:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Concurrency:     32,
		BlockedAfter:    3,
	})
}

func newTestSandbox(t *testing.T) *smtptest.Sandbox {
	t.Helper()
	sb, err := smtptest.NewSandbox()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	return sb
}

func TestProbeOutcomes(t *testing.T) {
	sb := newTestSandbox(t)
	before := runtime.NumGoroutine()
	cases := []struct {
		ip      string
		b       *smtptest.Behavior // nil: nothing listens
		outcome Outcome
		code    int
		summary string
	}{
		{"127.0.7.1", &smtptest.Accept, OutcomeAccept, 220, "220 mx.sandbox.test ESMTP"},
		{"127.0.7.2", &smtptest.Greet554, OutcomeSMTPRefusal, 554, "554 5.7.1 No SMTP service here"},
		{"127.0.7.3", nil, OutcomeRefused, 0, "connection refused"},
		{"127.0.7.4", &smtptest.Silent, OutcomeGreetingTimeout, 0, "no greeting before the timeout"},
		{"127.0.7.5", &smtptest.NotSMTP, OutcomeNotSMTP, 0, "not an SMTP greeting: SSH-2.0"},
		{"127.0.7.6", &smtptest.Blackhole, OutcomeConnectTimeout, 0, "no answer to the TCP connection attempt"},
		{"127.0.7.7", ptr(smtptest.Banner("220-first line\r\n220-second\r\n220 last\r\n", 0)), OutcomeAccept, 220, "220-first line"},
		{"127.0.7.8", ptr(smtptest.Banner("421 4.3.2 busy\r\n", 0)), OutcomeSMTPRefusal, 421, "421 4.3.2 busy"},
		{"127.0.7.9", ptr(smtptest.Banner("220\r\n", 0)), OutcomeAccept, 220, "220"},
		{"127.0.7.10", ptr(smtptest.Banner("220 bare newline\n", 0)), OutcomeAccept, 220, "220 bare newline"},
		{"127.0.7.11", ptr(smtptest.Banner("HTTP/1.1 400 Bad Request\r\n", 0)), OutcomeNotSMTP, 0, "not an SMTP greeting: HTTP"},
		{"127.0.7.12", ptr(smtptest.Banner("220xyz\r\n", 0)), OutcomeNotSMTP, 0, "not an SMTP greeting"},
		// Once a line starts with a reply code, the host speaks SMTP, whatever follows.
		{"127.0.7.13", ptr(smtptest.Banner("220-"+strings.Repeat("x", 2<<20), 0)), OutcomeAccept, 220, "220-xxx"},
		{"127.0.7.14", ptr(smtptest.Banner(strings.Repeat("220-more\r\n", 100000), 0)), OutcomeAccept, 220, "220-more"},
		{"127.0.7.15", ptr(smtptest.Drip("220 drip\r\n", 200*time.Millisecond)), OutcomeGreetingTimeout, 0, "no greeting before"},
		{"127.0.7.16", &smtptest.Reset, OutcomeNotSMTP, 0, "closed the connection without a greeting"},
		{"127.0.7.17", ptr(smtptest.Banner("220 partial line, then silence", 0)), OutcomeAccept, 220, "220 partial line"},
		{"127.0.7.18", ptr(smtptest.Banner("2", 0)), OutcomeGreetingTimeout, 0, "no greeting"},
		{"127.0.7.19", ptr(smtptest.Banner("\x00\x01\x02\r\n", 0)), OutcomeNotSMTP, 0, "not an SMTP greeting: ???"},
	}
	servers := map[string]*smtptest.SMTPServer{}
	for _, c := range cases {
		if c.b == nil {
			if err := sb.Closed(c.ip); err != nil {
				t.Fatal(err)
			}
			continue
		}
		srv, err := sb.Serve(c.ip, *c.b)
		if err != nil {
			t.Fatal(err)
		}
		servers[c.ip] = srv
	}
	p := testProber(t, sb)
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := p.Probe(context.Background(), netip.MustParseAddr(c.ip))
			if r.Outcome != c.outcome || r.Code != c.code || !strings.Contains(r.Summary(), c.summary) {
				t.Errorf("%s: %s %d %q; want %s %d %q", c.ip, r.Outcome, r.Code, r.Summary(), c.outcome, c.code, c.summary)
			}
			if limit := 300*time.Millisecond + 500*time.Millisecond + quitTimeout; r.Took > limit {
				t.Errorf("%s: probe took %v, beyond its timeouts", c.ip, r.Took)
			}
		}()
	}
	wg.Wait()
	if srv := servers["127.0.7.2"]; srv.Quits() != 1 {
		t.Errorf("the 554 server got %d QUITs", srv.Quits())
	}
	sb.Close()
	waitGoroutines(t, before)
}

func ptr(b smtptest.Behavior) *smtptest.Behavior { return &b }

// waitGoroutines fails if goroutines started by a test outlive it. The
// deadline is generous: goroutines that leak stay for good.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

func TestProbeNeverDialsDisallowedAddresses(t *testing.T) {
	sb := newTestSandbox(t)
	srv, err := sb.Serve("127.0.7.30", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	p := newSMTPProber(ProbeConfig{Port: sb.Port}) // no allow_networks
	for _, ip := range []string{"127.0.7.30", "10.0.0.1", "169.254.169.254", "::1", "fd00::1", "192.0.2.1"} {
		r := p.Probe(context.Background(), netip.MustParseAddr(ip))
		if r.Outcome != OutcomeNotAllowed || !strings.Contains(r.Detail, "probe.allow_networks") {
			t.Errorf("%s: %s %q", ip, r.Outcome, r.Detail)
		}
	}
	if srv.Connections() != 0 {
		t.Errorf("a disallowed address was dialled %d times", srv.Connections())
	}
}

func TestProbeConcurrencyCap(t *testing.T) {
	sb := newTestSandbox(t)
	srv, err := sb.Serve("127.0.7.40", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	p := newSMTPProber(ProbeConfig{Port: sb.Port, GreetingTimeout: 200 * time.Millisecond, Concurrency: 3,
		AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.7.40/32")}})
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Probe(context.Background(), netip.MustParseAddr("127.0.7.40"))
		}()
	}
	wg.Wait()
	if _, peak := p.InFlight(); srv.Connections() != 12 || peak != 3 {
		t.Errorf("%d probes, %d at once; want 12 and 3", srv.Connections(), peak)
	}
}

func TestProbeQueueIsBounded(t *testing.T) {
	sb := newTestSandbox(t)
	srv, err := sb.Serve("127.0.7.41", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	// Probes of the silent host end only when cancelled, so the test decides
	// when the slot frees; the queue's own timer is the only clock left.
	const queueTimeout = 2 * time.Second
	p := newSMTPProber(ProbeConfig{Port: sb.Port, GreetingTimeout: time.Minute, Concurrency: 1,
		MaxQueued: 2, QueueTimeout: queueTimeout, AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.7.41/32")}})
	ip := netip.MustParseAddr("127.0.7.41")
	probe := func(ctx context.Context) <-chan probeResult {
		ch := make(chan probeResult, 1)
		go func() { ch <- p.Probe(ctx, ip) }()
		return ch
	}
	firstCtx, endFirst := context.WithCancel(context.Background())
	defer endFirst()
	first := probe(firstCtx)
	testkit.WaitFor(t, "the first probe to connect", func() bool { return srv.Connections() == 1 })

	// Two queue behind it; three more find the queue full and give up at once.
	queuedCtx, endQueued := context.WithCancel(context.Background())
	defer endQueued()
	queuedAt := time.Now()
	queued := []<-chan probeResult{probe(queuedCtx), probe(queuedCtx)}
	testkit.WaitFor(t, "two probes to queue", func() bool { return p.waiting.Load() == 2 })
	for i := 0; i < 3; i++ {
		if r := p.Probe(context.Background(), ip); r.Outcome != OutcomeAbandoned {
			t.Errorf("a probe beyond the full queue: %s %s", r.Outcome, r.Detail)
		}
	}
	if n := p.waiting.Load(); n != 2 || srv.Connections() != 1 {
		t.Errorf("%d probes queued, %d connections, after three came to a full queue", n, srv.Connections())
	}

	// The first probe ends: one queued probe gets the slot in time, the
	// other gives up when the queue timeout has passed.
	endFirst()
	if r := <-first; r.Outcome != OutcomeGreetingTimeout {
		t.Errorf("the first probe: %s %s", r.Outcome, r.Detail)
	}
	var gaveUp probeResult
	select {
	case gaveUp = <-queued[0]:
		queued = queued[1:]
	case gaveUp = <-queued[1]:
		queued = queued[:1]
	case <-time.After(queueTimeout + 30*time.Second):
		t.Fatal("no queued probe gave up")
	}
	if gaveUp.Outcome != OutcomeAbandoned {
		t.Errorf("the queued probe left without the slot: %s %s", gaveUp.Outcome, gaveUp.Detail)
	}
	if waited := time.Since(queuedAt); waited < queueTimeout {
		t.Errorf("a queued probe gave up after %v, before the queue timeout", waited)
	}
	testkit.WaitFor(t, "the other queued probe to connect", func() bool { return srv.Connections() == 2 })
	endQueued()
	if r := <-queued[0]; r.Outcome != OutcomeGreetingTimeout {
		t.Errorf("the queued probe that got the slot: %s %s", r.Outcome, r.Detail)
	}
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestEgressBlockedDetection(t *testing.T) {
	sb := newTestSandbox(t)
	p := testProber(t, sb)
	v4 := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	for _, ip := range []string{"127.0.7.50", "127.0.7.51", "127.0.7.52"} {
		if _, err := sb.Serve(ip, smtptest.Blackhole); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sb.Serve("127.0.7.53", smtptest.Accept); err != nil {
		t.Fatal(err)
	}
	for i, ip := range []string{"127.0.7.50", "127.0.7.51", "127.0.7.52"} {
		if blocked, _ := p.egress.blocked(v4); blocked {
			t.Fatalf("blocked after %d timeouts", i)
		}
		p.Probe(context.Background(), netip.MustParseAddr(ip))
	}
	if blocked, why := p.egress.blocked(v4); !blocked || !strings.Contains(why, "port 25 looks blocked") {
		t.Errorf("not blocked after 3 connect timeouts: %q", why)
	}
	p.Probe(context.Background(), netip.MustParseAddr("127.0.7.53"))
	if blocked, _ := p.egress.blocked(v4); blocked {
		t.Error("still blocked after an MX answered")
	}
}

func TestProbeHonoursCancellation(t *testing.T) {
	sb := newTestSandbox(t)
	if _, err := sb.Serve("127.0.7.60", smtptest.Silent); err != nil {
		t.Fatal(err)
	}
	p := newSMTPProber(ProbeConfig{Port: sb.Port, GreetingTimeout: time.Minute,
		AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if r := p.Probe(ctx, netip.MustParseAddr("127.0.7.60")); r.Outcome != OutcomeGreetingTimeout || r.Took > 10*time.Second {
		t.Errorf("%s after %v", r.Outcome, r.Took)
	}
}
