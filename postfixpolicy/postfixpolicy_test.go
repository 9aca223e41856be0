package postfixpolicy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// rig is a policy server in front of the check-table sandbox (internal/spectest).
type rig struct {
	srv  *Server
	addr string
}

func newRig(t testing.TB, tune func(*policy.Config, *Config, *Options)) *rig {
	t.Helper()
	sb := spectest.Sandbox(t)
	pcfg := spectest.Config(sb)
	cfg := &Config{HeaderName: "X-MXGuard", DecisionTimeout: 5 * time.Second}
	opts := Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tune != nil {
		tune(&pcfg, cfg, &opts)
	}
	engine, err := policy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Engine = engine
	srv := New(cfg, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &rig{srv, ln.Addr().String()}
}

// client is one Postfix smtpd's connection.
type client struct {
	t  testing.TB
	c  net.Conn
	in *bufio.Reader
}

func (r *rig) dial(t testing.TB) *client {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t, c, bufio.NewReader(c)}
}

// ask sends a request as Postfix does and returns the action.
func (c *client) ask(attrs ...string) (string, error) {
	c.t.Helper()
	var b strings.Builder
	for _, a := range attrs {
		b.WriteString(a + "\n")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(c.c, b.String()); err != nil {
		return "", err
	}
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := c.in.ReadString('\n')
	if err != nil {
		return "", err
	}
	if blank, err := c.in.ReadString('\n'); err != nil || blank != "\n" {
		return "", fmt.Errorf("no empty line after %q: %q %v", line, blank, err)
	}
	if !strings.HasPrefix(line, "action=") {
		return "", fmt.Errorf("not an action: %q", line)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n"), nil
}

// rcpt is a RCPT request from a good sending host, as Postfix 3.7 sends it.
func rcpt(sender, instance, recipient string) []string {
	return []string{"request=smtpd_access_policy", "protocol_state=RCPT", "protocol_name=ESMTP",
		"client_address=127.0.3.1", "client_name=mail.good.test", "reverse_client_name=mail.good.test",
		"client_port=40000", "helo_name=mail.good.test", "sender=" + sender, "recipient=" + recipient,
		"recipient_count=0", "queue_id=", "instance=" + instance, "size=0", "etrn_domain=", "stress=",
		"sasl_method=", "sasl_username=", "sasl_sender=", "ccert_subject=", "ccert_issuer=", "ccert_fingerprint=",
		"ccert_pubkey_fingerprint=", "encryption_protocol=", "encryption_cipher=", "encryption_keysize=0",
		"policy_context=", "server_address=127.0.0.1", "server_port=25", "compatibility_level=3.6", "mail_version=3.7.11"}
}

func TestEveryVerdictHasItsAction(t *testing.T) {
	r := newRig(t, func(p *policy.Config, _ *Config, _ *Options) { p.Policy.Actions[policy.MXTargets] = policy.Hold })
	c := r.dial(t)
	for i, tc := range []struct{ sender, action string }{
		{"a@ok.test", "PREPEND X-MXGuard: pass; domain=ok.test; ip=127.0.3.1"},
		{"a@some-refused.test", "PREPEND X-MXGuard: flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn"},
		{"", "PREPEND X-MXGuard: pass; domain=<>; ip=127.0.3.1"},
		{"a@literal-mx.test", "HOLD mxguard: literal-mx.test: mx.targets fail:"},
		{"a@refused.test", "451 4.7.1 refused.test: mx.port25 fail: no MX host accepts SMTP"},
		{"a@nullmx.test", "451 4.7.27 nullmx.test: mx.records fail"},
		{"a@[127.0.0.1]", "550 5.7.1 [127.0.0.1]: domain.syntax fail"},
	} {
		got, err := c.ask(rcpt(tc.sender, fmt.Sprintf("m%d", i), "user@remote.example")...)
		if err != nil || !strings.HasPrefix(got, tc.action) {
			t.Errorf("%q: %q %v, want %q", tc.sender, got, err, tc.action)
		}
	}
}

// One header per message, and one decision, whatever the recipient count;
// a refusal refuses every recipient.
func TestOneDecisionPerMessage(t *testing.T) {
	r := newRig(t, nil)
	c := r.dial(t)
	for _, m := range []struct{ sender, first, later string }{
		{"a@ok.test", "PREPEND X-MXGuard: pass;", "DUNNO"},
		{"a@refused.test", "451 4.7.1 refused.test", "451 4.7.1 refused.test"},
		{"b@ok.test", "PREPEND X-MXGuard: pass;", "DUNNO"}, // a new instance: decided afresh
	} {
		instance := "inst-" + m.sender
		for i := 0; i < 3; i++ {
			want := m.later
			if i == 0 {
				want = m.first
			}
			if got, err := c.ask(rcpt(m.sender, instance, fmt.Sprintf("u%d@remote.example", i))...); err != nil || !strings.HasPrefix(got, want) {
				t.Errorf("%s, recipient %d: %q %v, want %q", m.sender, i, got, err, want)
			}
		}
	}
	// DATA of a decided message adds nothing.
	data := append(rcpt("a@ok.test", "inst-b@ok.test", ""), "protocol_state=DATA")
	if got, err := c.ask(data...); err != nil || got != "DUNNO" {
		t.Errorf("DATA after RCPT: %q %v", got, err)
	}
}

// Only RCPT and DATA are decided; unknown attributes are ignored.
func TestOtherStatesAndUnknownAttributes(t *testing.T) {
	r := newRig(t, nil)
	c := r.dial(t)
	for _, state := range []string{"CONNECT", "EHLO", "MAIL", "VRFY", "ETRN", "END-OF-MESSAGE"} {
		req := append(rcpt("a@refused.test", "x", ""), "protocol_state="+state)
		if got, err := c.ask(req...); err != nil || got != "DUNNO" {
			t.Errorf("%s: %q %v", state, got, err)
		}
	}
	req := append(rcpt("a@ok.test", "y", "u@remote.example"), "attribute_of_postfix_3_12=whatever", "another=")
	if got, err := c.ask(req...); err != nil || !strings.HasPrefix(got, "PREPEND") {
		t.Errorf("with unknown attributes: %q %v", got, err)
	}
	if got, err := c.ask("request=something_else", "protocol_state=RCPT"); err != nil || got != "DUNNO" {
		t.Errorf("another request type: %q %v", got, err)
	}
}

// A malformed request closes its own connection, and only that one.
func TestMalformedRequestsCloseTheirConnection(t *testing.T) {
	r := newRig(t, nil)
	good := r.dial(t)
	for name, payload := range map[string]string{
		"no equals sign":      "request=smtpd_access_policy\nthis is not an attribute\n\n",
		"an empty name":       "=value\n\n",
		"an over-long line":   "sender=" + strings.Repeat("x", 2*maxLine) + "\n\n",
		"too many attributes": strings.Repeat("a=b\n", maxAttributes+1) + "\n",
		"an empty request":    "\n",
	} {
		c := r.dial(t)
		io.WriteString(c.c, payload)
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Closed with unread input, the connection may end in a reset.
		if b, err := c.in.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: read %q, %v; want the connection closed", name, b, err)
		}
	}
	if got, err := good.ask(rcpt("a@ok.test", "z", "u@remote.example")...); err != nil || !strings.HasPrefix(got, "PREPEND") {
		t.Errorf("a good connection beside them: %q %v", got, err)
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) { o.IdleTimeout = 200 * time.Millisecond })
	c := r.dial(t)
	if _, err := c.ask(rcpt("a@ok.test", "i", "u@remote.example")...); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c.c, "request=smtpd_access_policy\n") // half a request, then silence
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.in.ReadByte(); err != io.EOF {
		t.Errorf("an idle connection: %v, want it closed", err)
	}
	testkit.WaitFor(t, "the connection to be gone", func() bool { return r.srv.ActiveConns() == 0 })
}

// A decision past decision_timeout answers at once with the temperror
// header, and finishes in the background for the cache.
func TestDecisionTimeoutFailsOpen(t *testing.T) {
	var engine *policy.Engine
	r := newRig(t, func(p *policy.Config, c *Config, _ *Options) {
		c.DecisionTimeout = 100 * time.Millisecond
		p.Probe.GreetingTimeout = 2 * time.Second
	})
	engine = r.srv.config().Engine.(*policy.Engine)
	c := r.dial(t)
	began := time.Now()
	got, err := c.ask(rcpt("a@silent.test", "t", "u@remote.example")...)
	if err != nil || !strings.HasPrefix(got, "PREPEND X-MXGuard: temperror; domain=silent.test") {
		t.Fatalf("%q %v", got, err)
	}
	if took := time.Since(began); took > 1500*time.Millisecond { // the probe alone waits 2 s
		t.Errorf("answered after %v", took)
	}
	testkit.WaitFor(t, "the probe to finish into the cache", func() bool { return engine.ProbeCacheStats().Entries > 0 })
}

func TestReportModeRefusesNothing(t *testing.T) {
	r := newRig(t, func(p *policy.Config, _ *Config, _ *Options) { p.Policy.ReportOnly = true })
	got, err := r.dial(t).ask(rcpt("a@refused.test", "r", "u@remote.example")...)
	if err != nil || !strings.HasPrefix(got, "PREPEND X-MXGuard: defer; mode=report; domain=refused.test") {
		t.Errorf("%q %v", got, err)
	}
}

// Shutdown closes connections waiting for their next request.
func TestShutdownClosesIdleConnections(t *testing.T) {
	r := newRig(t, nil)
	c := r.dial(t)
	if _, err := c.ask(rcpt("a@ok.test", "s", "u@remote.example")...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown did not finish: %v", err)
	}
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.in.ReadByte(); err != io.EOF {
		t.Errorf("the connection: %v, want closed", err)
	}
}
