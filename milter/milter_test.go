package milter_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// harness is a milter on loopback in front of the check-table sandbox (internal/spectest).
type harness struct {
	sb     *smtptest.Sandbox
	engine *policy.Engine
	m      *milter.Milter
	addr   string
	rec    *recorder
}

func newHarness(t testing.TB, tune func(*policy.Config, *milter.Config, *milter.Options)) *harness {
	t.Helper()
	sb := spectest.Sandbox(t)
	pcfg := spectest.Config(sb)
	mcfg := &milter.Config{HeaderName: "X-MXGuard", DecisionTimeout: 5 * time.Second}
	rec := &recorder{}
	opts := milter.Options{Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tune != nil {
		tune(&pcfg, mcfg, &opts)
	}
	engine, err := policy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	if mcfg.Engine == nil {
		mcfg.Engine = engine
	}
	m := milter.New(mcfg, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, gomilter.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &harness{sb: sb, engine: engine, m: m, addr: ln.Addr().String(), rec: rec}
}

// goodConn is a sending host whose PTR, FCrDNS and HELO all pass.
func goodConn(msgs ...smtptest.MilterMessage) smtptest.MilterConn {
	return smtptest.MilterConn{ClientIP: "127.0.3.1", ClientName: "mail.good.test", HELO: "mail.good.test",
		Macros: map[string]string{"j": "mta.lab.test", "{daemon_name}": "smtpd"}, Messages: msgs}
}

func message(from string) smtptest.MilterMessage {
	return smtptest.MilterMessage{From: from, To: []string{"rcpt@example.net"}, QueueID: "4ABC123",
		Headers: [][2]string{{"From", "Sender <" + from + ">"}, {"Subject", "hello"}}, Body: "hello\r\n"}
}

func (h *harness) play(t testing.TB, conn smtptest.MilterConn) []smtptest.MilterResult {
	t.Helper()
	res, err := smtptest.PlayMilter("tcp", h.addr, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(conn.Messages) {
		t.Fatalf("%d results for %d messages", len(res), len(conn.Messages))
	}
	return res
}

// headerFindings is the row's findings as the header lists them: each
// check that warned, failed or could not finish, as "; id=status".
func headerFindings(c spectest.Case) string {
	var b strings.Builder
	for _, f := range strings.Fields(c.Expected()) {
		if !strings.HasSuffix(f, "=skip") {
			b.WriteString("; " + f)
		}
	}
	return b.String()
}

func TestVerdictsAndActions(t *testing.T) {
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, _ *milter.Options) {
		p.Policy.Actions[policy.MXTargets] = policy.Hold
	})
	cases := []struct {
		from, header, quarantine, reply, stage string
	}{
		{"a@ok.test", "pass; domain=ok.test; ip=127.0.3.1", "", "", "eom"},
		{"a@some-refused.test", "flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn", "", "", "eom"},
		{"a@literal-mx.test", "hold; domain=literal-mx.test; ip=127.0.3.1; mx.targets=fail", "mxguard: literal-mx.test: mx.targets fail", "", "eom"},
		{"a@refused.test", "", "", "451 4.7.1 refused.test: mx.port25 fail: no MX host accepts SMTP", "rcpt"},
		{"a@nullmx.test", "", "", "451 4.7.27 nullmx.test: mx.records fail", "rcpt"},
		{"a@[127.0.0.1]", "", "", "550 5.7.1 [127.0.0.1]: domain.syntax fail", "rcpt"},
		{"", "pass; domain=<>; ip=127.0.3.1", "", "", "eom"},
		{"a@servfail.test", "pass; domain=servfail.test; ip=127.0.3.1" + headerFindings(spectest.CaseNamed("MX SERVFAIL is not implicit MX")), "", "", "eom"},
	}
	for _, c := range cases {
		t.Run(c.from, func(t *testing.T) {
			r := h.play(t, goodConn(message(c.from)))[0]
			if r.Stage != c.stage {
				t.Errorf("ended at %s (%c %q), want %s", r.Stage, r.Action, r.Reply, c.stage)
			}
			if c.reply != "" && (r.Action != gomilter.ActReplyCode || !strings.HasPrefix(r.Reply, c.reply)) {
				t.Errorf("reply %c %q, want %q", r.Action, r.Reply, c.reply)
			}
			if c.reply != "" && !strings.Contains(r.Reply, "Fix: ") {
				t.Errorf("reply %q does not say what to fix", r.Reply)
			}
			if got, _ := r.Header("X-MXGuard"); got != c.header {
				t.Errorf("header %q, want %q", got, c.header)
			}
			if c.header != "" && len(r.Headers) != 1 {
				t.Errorf("%d headers added: %v", len(r.Headers), r.Headers)
			}
			if !strings.HasPrefix(r.Quarantine, c.quarantine) || (c.quarantine == "") != (r.Quarantine == "") {
				t.Errorf("quarantine %q, want %q", r.Quarantine, c.quarantine)
			}
		})
	}
}

func TestReplyAtMailFrom(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.ReplyAt = milter.StageMail })
	r := h.play(t, goodConn(message("a@refused.test")))[0]
	if r.Stage != "mail" || !strings.HasPrefix(r.Reply, "451 4.7.1 ") {
		t.Errorf("%s %q", r.Stage, r.Reply)
	}
}

func TestOnTempErrorDefer(t *testing.T) {
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, _ *milter.Options) { p.Policy.OnTempError = policy.Defer })
	r := h.play(t, goodConn(message("a@servfail.test")))[0]
	if r.Stage != "rcpt" || !strings.HasPrefix(r.Reply, "451 4.4.3 ") {
		t.Errorf("%s %q", r.Stage, r.Reply)
	}
}

// The HELO name and client survive from message to message, aborts and
// refusals included (go-milter would forget them after an accept or reject).
func TestSeveralMessagesPerConnection(t *testing.T) {
	h := newHarness(t, nil)
	conn := goodConn(message("a@ok.test"), message("a@refused.test"), message("a@ok.test"))
	conn.HELO = "other.good.test" // a HELO/PTR mismatch: flagged on every message
	aborted := message("a@ok.test")
	aborted.AbortAfterRcpt = true
	conn.Messages = append(conn.Messages[:2], aborted, conn.Messages[2], message("a@v4.test"))
	res := h.play(t, conn)
	want := []string{
		"flag; domain=ok.test; ip=127.0.3.1; helo.matches-ptr=warn",
		"",
		"",
		"flag; domain=ok.test; ip=127.0.3.1; helo.matches-ptr=warn",
		"flag; domain=v4.test; ip=127.0.3.1; helo.matches-ptr=warn",
	}
	for i, r := range res {
		if got, _ := r.Header("X-MXGuard"); got != want[i] {
			t.Errorf("message %d: header %q, want %q (stage %s %q)", i, got, want[i], r.Stage, r.Reply)
		}
	}
	if res[1].Stage != "rcpt" || res[2].Stage != "aborted" {
		t.Errorf("stages %s, %s", res[1].Stage, res[2].Stage)
	}
}

func TestDecisionTimeoutFailsOpen(t *testing.T) {
	h := newHarness(t, func(p *policy.Config, m *milter.Config, _ *milter.Options) {
		// Far beyond decision_timeout: a session held until the probe ends
		// could not pass for one that failed open, however loaded the machine.
		p.Probe.GreetingTimeout = 20 * time.Second
		m.DecisionTimeout = 300 * time.Millisecond
	})
	silent, err := h.sb.Serve("127.0.15.1", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	h.sb.Zone.MX("hush.test", 10, "mx.hush.test").A("mx.hush.test", "127.0.15.1")
	began := time.Now()
	r := h.play(t, goodConn(message("a@hush.test")))[0]
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the session was held %v; decision_timeout is 300ms", took)
	}
	got, _ := r.Header("X-MXGuard")
	if !r.Accepted() || !strings.HasPrefix(got, "temperror; domain=hush.test; ip=127.0.3.1") {
		t.Errorf("accepted %v, header %q", r.Accepted(), got)
	}
	// The probe goes on in the background. The server hangs up on it rather
	// than wait out the greeting timeout: only a probe still running sees
	// that, and the next message is decided from the cache.
	testkit.WaitFor(t, "the probe to connect", func() bool { return silent.Connections() > 0 })
	silent.Close()
	testkit.WaitFor(t, "the probe result to reach the cache", func() bool { return h.engine.ProbeCacheStats().Entries > 0 })
	before := h.engine.ProbeCacheStats()
	r = h.play(t, goodConn(message("a@hush.test")))[0]
	if r.Stage != "rcpt" || !strings.HasPrefix(r.Reply, "451 4.7.1 hush.test: mx.port25 fail") {
		t.Errorf("after the background probe: %s %q", r.Stage, r.Reply)
	}
	if st := h.engine.ProbeCacheStats(); st.Hits == before.Hits || st.Misses != before.Misses {
		t.Errorf("the second message probed again: %+v, then %+v", before, st)
	}
	if n := h.rec.count("temperror"); n != 1 {
		t.Errorf("%d temperror decisions recorded", n)
	}
}

// held keeps the evaluation of every sender at held.test until release is
// closed, as if its MX hosts never answered; any other is decided at once.
type held struct {
	*policy.Engine // for its message methods, which these tests do not use
	release        chan struct{}
	waiting        atomic.Int32
}

func (h *held) EvaluateCold(ctx context.Context, req policy.Request) *policy.Report {
	if strings.Contains(req.Sender, "@held.test") {
		h.waiting.Add(1)
		defer h.waiting.Add(-1)
		select {
		case <-h.release:
		case <-ctx.Done():
			return &policy.Report{Incomplete: true}
		}
	}
	return &policy.Report{Domain: policy.ParseSender(req.Sender).Domain, ClientIP: req.ClientIP}
}

// EvaluateCached finds nothing cached: every decision runs EvaluateCold.
func (h *held) EvaluateCached(context.Context, policy.Request) *policy.Report { return nil }

// A client that pipelines MAIL FROM and RSET must not make the next
// transaction wait for the evaluations of the aborted ones.
func TestAbortedTransactionsDoNotQueue(t *testing.T) {
	engine := &held{release: make(chan struct{})}
	released := sync.OnceFunc(func() { close(engine.release) })
	t.Cleanup(released)
	h := newHarness(t, func(_ *policy.Config, m *milter.Config, _ *milter.Options) {
		m.Engine, m.DecisionTimeout = engine, time.Minute
	})
	conn := goodConn()
	for i := 0; i < 4; i++ {
		msg := message("a@held.test")
		msg.AbortAfterMail = true
		conn.Messages = append(conn.Messages, msg)
	}
	conn.Messages = append(conn.Messages, message("a@ok.test"))
	done := make(chan []smtptest.MilterResult, 1)
	go func() {
		res, err := smtptest.PlayMilter("tcp", h.addr, conn)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	// The aborted evaluations end only when released: queued behind them,
	// the last message would wait for good (a minute each, here).
	var res []smtptest.MilterResult
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		released()
		<-done
		t.Fatal("the aborted evaluations held up the last message")
	}
	// They are all still held (each started in a goroutine of its own).
	testkit.WaitFor(t, "four held evaluations", func() bool { return engine.waiting.Load() == 4 })
	if len(res) != 5 {
		t.Fatalf("%d results", len(res))
	}
	if got, _ := res[4].Header("X-MXGuard"); got != "pass; domain=ok.test; ip=127.0.3.1" {
		t.Errorf("last message: %q", got)
	}
}

type panicky struct{ *policy.Engine }

func (panicky) EvaluateCold(context.Context, policy.Request) *policy.Report { panic("boom") }

func (panicky) EvaluateCached(context.Context, policy.Request) *policy.Report { panic("boom") }

func (panicky) EvaluateMessage(context.Context, *policy.Report, policy.Request, *policy.Message) *policy.Report {
	panic("boom")
}

func TestInternalErrorFailsOpen(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, m *milter.Config, _ *milter.Options) { m.Engine = panicky{} })
	res := h.play(t, goodConn(message("a@refused.test"), message("a@ok.test")))
	for i, r := range res {
		got, _ := r.Header("X-MXGuard")
		if !r.Accepted() || !strings.HasPrefix(got, "temperror; domain=") {
			t.Errorf("message %d: accepted %v, header %q", i, r.Accepted(), got)
		}
	}
}

func TestHeaderFrom(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.HeaderFrom = true })
	msg := message("a@ok.test")
	msg.Headers[0][1] = `"Someone" <someone@refused.test>`
	r := h.play(t, goodConn(msg))[0]
	if r.Stage != "eom" || !strings.HasPrefix(r.Reply, "451 4.7.1 refused.test: mx.port25 fail") {
		t.Errorf("From refused.test: %s %c %q", r.Stage, r.Action, r.Reply)
	}
	msg.Headers[0][1] = "x@implicit.test"
	r = h.play(t, goodConn(msg))[0]
	if got, _ := r.Header("X-MXGuard"); got != "flag; domain=ok.test; ip=127.0.3.1; from=implicit.test; mx.records=warn" {
		t.Errorf("From implicit.test: %q", got)
	}
	msg.Headers[0][1] = "\"Someone\"\r\n <someone@refused.test>" // folded, as the MTA passes it
	r = h.play(t, goodConn(msg))[0]
	if !strings.HasPrefix(r.Reply, "451 4.7.1 refused.test") {
		t.Errorf("folded From: %s %q", r.Stage, r.Reply)
	}
	msg.Headers[0][1] = "garbled <<<"
	r = h.play(t, goodConn(msg))[0]
	if got, _ := r.Header("X-MXGuard"); got != "pass; domain=ok.test; ip=127.0.3.1" {
		t.Errorf("garbled From: %q", got)
	}
}

func TestAuthenticatedClientsSkipIdentity(t *testing.T) {
	var log testkit.SyncBuffer
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.Log = slog.New(slog.NewTextHandler(&log, nil))
	})
	conn := goodConn(message("a@ok.test"))
	conn.ClientIP, conn.HELO = "127.0.3.2", "localhost" // no PTR, bad HELO
	conn.Messages[0].AuthUser = "alice-login"
	r := h.play(t, conn)[0]
	if got, _ := r.Header("X-MXGuard"); got != "pass; domain=ok.test; ip=127.0.3.2" {
		t.Errorf("authenticated: %q", got)
	}
	// The log says a client authenticated, never as whom.
	if l := log.String(); !strings.Contains(l, "authenticated=true") || strings.Contains(l, "alice") {
		t.Errorf("log:\n%s", l)
	}
	conn.Messages[0].AuthUser = ""
	r = h.play(t, conn)[0]
	if got, _ := r.Header("X-MXGuard"); got != "flag; domain=ok.test; ip=127.0.3.2; helo.syntax=fail; client.ptr=fail" {
		t.Errorf("unauthenticated: %q", got)
	}
}

func TestIPv6ClientAndUnknownFamily(t *testing.T) {
	h := newHarness(t, nil)
	conn := goodConn(message("a@v4.test"))
	conn.ClientIP, conn.ClientName, conn.HELO = "::1", "v6.good.test", "v6.good.test"
	if got, _ := h.play(t, conn)[0].Header("X-MXGuard"); got != "pass; domain=v4.test; ip=::1" {
		t.Errorf("IPv6 client: %q", got)
	}
	local := smtptest.MilterConn{ClientName: "localhost", Messages: []smtptest.MilterMessage{message("a@ok.test")}}
	if got, _ := h.play(t, local)[0].Header("X-MXGuard"); got != "pass; domain=ok.test" {
		t.Errorf("local submission: %q", got)
	}
}

func TestConcurrentSessions(t *testing.T) {
	h := newHarness(t, nil)
	senders := []string{"a@ok.test", "a@refused.test", "a@implicit.test", "a@554.test", "a@nx.test"}
	want := map[string]string{
		"a@ok.test": "pass", "a@refused.test": "451", "a@implicit.test": "flag", "a@554.test": "pass", "a@nx.test": "451",
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []smtptest.MilterMessage
			for j := 0; j < 3; j++ {
				msgs = append(msgs, message(senders[(i+j)%len(senders)]))
			}
			res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(msgs...))
			if err != nil {
				t.Error(err)
				return
			}
			for j, r := range res {
				from := msgs[j].From
				hdr, _ := r.Header("X-MXGuard")
				if got := strings.SplitN(hdr+r.Reply, ";", 2)[0]; !strings.HasPrefix(got, want[from]) {
					t.Errorf("%s: %q", from, got)
				}
			}
		}()
	}
	wg.Wait()
}

func TestShutdownDrainsSessions(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, m *milter.Config, _ *milter.Options) { m.DecisionTimeout = 2 * time.Second })
	done := make(chan []smtptest.MilterResult)
	go func() {
		res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(message("a@silent.test"))) // takes ~greeting timeout
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	testkit.WaitFor(t, "the session to open", func() bool { return h.m.ActiveSessions() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if len(res) != 1 || !res[0].Accepted() {
		t.Errorf("in-flight message: %+v", res)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Error("still accepting after shutdown")
	}
}

func TestShutdownDeadlineClosesSessions(t *testing.T) {
	h := newHarness(t, nil)
	c, err := net.Dial("tcp", h.addr) // an MTA that connects and says nothing
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testkit.WaitFor(t, "the session to open", func() bool { return h.m.ActiveSessions() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.m.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown: %v", err)
	}
	if n := h.m.ActiveSessions(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

// At the session cap, the connection silent longest makes room for the new
// one; the others are closed by the idle timeout.
func TestIdleTimeoutAndSessionCap(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.IdleTimeout = 300 * time.Millisecond
		o.MaxSessions = 2
	})
	var idle []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
		testkit.WaitFor(t, "the session to open", func() bool { return h.m.ActiveSessions() == i+1 })
	}
	res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(message("a@ok.test")))
	if err != nil || !res[0].Accepted() {
		t.Fatalf("%v %+v", err, res)
	}
	if n := h.rec.droppedFor("evicted"); n != 1 {
		t.Errorf("%d sessions evicted to make room, want 1", n)
	}
	for i, c := range idle {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("idle connection %d was not closed", i)
		}
	}
	testkit.WaitFor(t, "every slot to be free", func() bool { return h.m.ActiveSessions() == 0 })
}

// The MTA says nothing while a client uploads a message (mxguard skips the
// body): the idle timeout must not cut that short.
func TestIdleTimeoutSparesOpenTransactions(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.IdleTimeout = 200 * time.Millisecond })
	msg := message("a@ok.test")
	msg.DataDelay = 600 * time.Millisecond
	r := h.play(t, goodConn(msg))[0]
	if got, _ := r.Header("X-MXGuard"); !r.Accepted() || got != "pass; domain=ok.test; ip=127.0.3.1" {
		t.Errorf("after a slow upload: %s %q", r.Stage, got)
	}
}

// flakyListener fails its first Accepts as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	failures int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures > 0 {
		l.failures--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errors.New("too many open files")}
	}
	return l.Listener.Accept()
}

func TestAcceptErrorsAreRetried(t *testing.T) {
	sb := spectest.Sandbox(t)
	engine, err := policy.New(spectest.Config(sb))
	if err != nil {
		t.Fatal(err)
	}
	m := milter.New(&milter.Config{Engine: engine, HeaderName: "X-MXGuard", DecisionTimeout: time.Second},
		milter.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(&flakyListener{Listener: ln, failures: 3}) }()
	res, err := smtptest.PlayMilter("tcp", ln.Addr().String(), goodConn(message("a@ok.test")))
	if err != nil || !res[0].Accepted() {
		t.Fatalf("after accept errors: %v %+v", err, res)
	}
	m.Shutdown(context.Background())
	if err := <-served; !errors.Is(err, gomilter.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

// recorder counts decisions by outcome, and dropped connections by reason.
type recorder struct {
	mu       sync.Mutex
	outcomes map[string]int
	dropped  map[string]int
}

func (r *recorder) SessionOpened() {}
func (r *recorder) SessionClosed() {}
func (r *recorder) ConnectionDropped(_, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dropped == nil {
		r.dropped = map[string]int{}
	}
	r.dropped[reason]++
}

func (r *recorder) droppedFor(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped[reason]
}
func (r *recorder) Decision(_ *policy.Report, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outcomes == nil {
		r.outcomes = map[string]int{}
	}
	r.outcomes[outcome]++
}

func (r *recorder) count(outcome string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outcomes[outcome]
}

// evaluations counts the decisions that needed EvaluateCold: the ones
// not decided from the caches at MAIL FROM.
type evaluations struct {
	*policy.Engine
	n atomic.Int32
}

func (e *evaluations) EvaluateCold(ctx context.Context, req policy.Request) *policy.Report {
	e.n.Add(1)
	return e.Engine.EvaluateCold(ctx, req)
}

// A warm decision is made from the caches in the session, without
// starting an evaluation; a cold one starts it and gets the same verdict.
func TestWarmDecisionNeedsNoEvaluation(t *testing.T) {
	var counted *evaluations
	reports := &reportLookups{}
	h := newHarness(t, func(p *policy.Config, m *milter.Config, _ *milter.Options) {
		p.Observer = reports
		e, err := policy.New(*p)
		if err != nil {
			t.Fatal(err)
		}
		counted = &evaluations{Engine: e}
		m.Engine = counted
	})
	for round, want := range []int32{1, 0} {
		counted.n.Store(0)
		res := h.play(t, goodConn(message("a@ok.test")))
		if got, _ := res[0].Header("X-MXGuard"); !strings.HasPrefix(got, "pass") {
			t.Errorf("round %d: header %q", round, got)
		}
		if got := counted.n.Load(); got != want {
			t.Errorf("round %d: %d evaluations started, want %d", round, got, want)
		}
	}
	// One look for a remembered report per decision: the cold one's
	// evaluation does not run from the caches again.
	if n := reports.n.Load(); n != 2 {
		t.Errorf("%d lookups of remembered reports for 2 decisions", n)
	}
}

// reportLookups counts the engine's lookups of remembered reports.
type reportLookups struct{ n atomic.Int32 }

func (*reportLookups) DNSQuery(uint16, string, time.Duration) {}
func (*reportLookups) Probe(policy.Outcome, time.Duration)    {}
func (r *reportLookups) CacheLookup(cache string, _ bool) {
	if cache == "report" {
		r.n.Add(1)
	}
}

// With log.level: warn, decisions are counted but not logged.
func TestDecisionsNotLoggedAboveInfo(t *testing.T) {
	var logged testkit.SyncBuffer
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.Log = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	h.play(t, goodConn(message("a@ok.test")))
	h.rec.mu.Lock()
	decided := h.rec.outcomes["pass"]
	h.rec.mu.Unlock()
	if decided != 1 || strings.Contains(logged.String(), "decision") {
		t.Errorf("%d pass decisions counted; log: %q", decided, logged.String())
	}
}
