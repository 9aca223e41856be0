package milter_test

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// messageHarness is a milter with the message checks on, and a signer for
// author.test (whose SPF authorizes the sandbox relay) published in its zone.
func messageHarness(t *testing.T) (*harness, *smtptest.DKIMSigner) {
	t.Helper()
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.Message = true })
	s, err := smtptest.NewDKIMSigner("author.test", "lab", 2048)
	if err != nil {
		t.Fatal(err)
	}
	h.sb.Zone.MX("author.test", 10, "mx.accept.test").DKIMKey(s).TXT("_dmarc.author.test", "v=DMARC1; p=reject")
	spectest.PassingExcept(h.sb.Zone, policy.DMARCRecord, "author.test")
	spectest.Passing(h.sb.Zone, "other.test")
	h.sb.Zone.MX("other.test", 10, "mx.accept.test")
	return h, s
}

func signed(t *testing.T, s *smtptest.DKIMSigner, m smtptest.MilterMessage) smtptest.MilterMessage {
	t.Helper()
	m, err := s.SignMilterMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMessageChecksThroughTheMilter(t *testing.T) {
	h, s := messageHarness(t)
	bulk := message("a@author.test")
	bulk.Headers = append(bulk.Headers, [2]string{"List-Id", "<news.author.test>"})
	big := message("a@author.test")
	big.Body = strings.Repeat("a line of a long body\r\n", 30000) // 690 KB, in 64 KiB chunks
	folded := message("a@author.test")
	folded.Headers = append(folded.Headers, [2]string{"X-Folded", "first\n\tsecond"}) // as Postfix sends a folded field
	cases := []struct {
		name string
		msg  smtptest.MilterMessage
		want string
	}{
		{"signed and aligned", signed(t, s, message("a@author.test")), "pass; domain=author.test; ip=127.0.3.1"},
		{"a long body in chunks", signed(t, s, big), "pass; domain=author.test; ip=127.0.3.1"},
		{"a folded field", signed(t, s, folded), "pass; domain=author.test; ip=127.0.3.1"},
		{"unsigned, another envelope domain", message2("b@other.test", "a@author.test"), "flag; domain=other.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=fail"},
		{"unsigned, aligned envelope", message("a@author.test"), "flag; domain=author.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=warn"},
		{"bulk without one-click", signed(t, s, bulk), "flag; domain=author.test; ip=127.0.3.1; bulk.unsubscribe=fail"},
		{"changed after signing", changed(signed(t, s, message("a@author.test"))), "flag; domain=author.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=warn"},
		{"a bounce", message2("", "MAILER-DAEMON@author.test"), "pass; domain=<>; ip=127.0.3.1"},
		{"no header fields", noHeader(message("a@author.test")), "flag; domain=author.test; ip=127.0.3.1; dkim.signature=fail"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.play(t, goodConn(c.msg))[0]
			got, _ := r.Header("X-MXGuard")
			if !r.Accepted() || got != c.want {
				t.Errorf("stage %s, reply %q, header %q; want %q", r.Stage, r.Reply, got, c.want)
			}
		})
	}
}

// message2 is a message whose envelope sender is not its author.
func message2(sender, author string) smtptest.MilterMessage {
	m := message(author)
	m.From = sender
	return m
}

// noHeader is m with no header field at all: still a message to judge.
func noHeader(m smtptest.MilterMessage) smtptest.MilterMessage {
	m.Headers = nil
	return m
}

func changed(m smtptest.MilterMessage) smtptest.MilterMessage {
	m.Body += "A footer a list server added.\r\n"
	return m
}

// A forged copy of mxguard's header is removed before the message leaves,
// so it is not part of the message the checks see.
func TestForgedHeaderIsNotPartOfTheCheckedMessage(t *testing.T) {
	h, s := messageHarness(t)
	m := signed(t, s, message("a@author.test"))
	m.Headers = append(m.Headers, [2]string{"X-MXGuard", "pass; domain=forged.example"})
	r := h.play(t, goodConn(m))[0]
	if got, _ := r.Header("X-MXGuard"); got != "pass; domain=author.test; ip=127.0.3.1" || len(r.HeaderChanges) != 1 {
		t.Errorf("header %q, changes %+v", got, r.HeaderChanges)
	}
}

// A reject at end of message is what an operator gets by setting a
// message check to reject; a temporary error never refuses.
func TestMessageCheckEnforced(t *testing.T) {
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, o *milter.Options) {
		o.Message = true
		p.Policy.Actions[policy.DKIMSignature] = policy.Reject
	})
	spectest.Passing(h.sb.Zone, "other.test")
	h.sb.Zone.MX("other.test", 10, "mx.accept.test")
	r := h.play(t, goodConn(message("a@other.test")))[0]
	if r.Stage != "eom" || !strings.HasPrefix(r.Reply, "550 5.7.1 other.test: dkim.signature fail") {
		t.Errorf("stage %s, reply %q", r.Stage, r.Reply)
	}
}

// Off, the milter asks for what it asked for before the message checks:
// no body, and no end of headers without checks.header_from.
func TestMessageChecksOffSkipTheBody(t *testing.T) {
	for _, on := range []bool{false, true} {
		h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.Message = on })
		_, _, got, _ := dialRaw(t, h.addr).negotiate(6, everyAction, everyProtocol)
		body := got&gomilter.OptNoBody == 0
		if body != on || (got&gomilter.OptNoEOH == 0) != on || (got&gomilter.OptHeaderLeadingSpace != 0) != on {
			t.Errorf("checks.message %v: negotiated %#x", on, got)
		}
	}
}

// The inventory gets the domain's report, not one message's: an unsigned
// message does not make its sender domain failing.
func TestInventoryGetsTheDomainsReport(t *testing.T) {
	var mu sync.Mutex
	var seen []*policy.Report
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.Message = true
		o.Seen = func(r *policy.Report) { mu.Lock(); seen = append(seen, r); mu.Unlock() }
	})
	spectest.Passing(h.sb.Zone, "other.test")
	h.sb.Zone.MX("other.test", 10, "mx.accept.test")
	r := h.play(t, goodConn(message("a@other.test")))[0]
	if got, _ := r.Header("X-MXGuard"); !strings.Contains(got, "dkim.signature=fail") {
		t.Fatalf("header %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0].Verdict() != policy.Pass || seen[0].Check(policy.DKIMSignature).ID != "" {
		t.Errorf("the inventory got %d reports: %+v", len(seen), seen)
	}
}

// A connection that ends inside a message (the MTA gone, a transaction
// timeout, an eviction) stops the message's verifier: no goroutine or
// buffer is left behind per dropped connection.
func TestDroppedConnectionLeavesNoVerifier(t *testing.T) {
	h, _ := messageHarness(t)
	baseline := runtime.NumGoroutine()
	for range 20 {
		c := dialRaw(t, h.addr)
		c.negotiate(6, everyAction, everyProtocol)
		c.send('M', "<a@author.test>\x00") // no answer: SMFIP_NR_MAIL
		c.send('R', "<rcpt@example.net>\x00")
		if code, _, err := c.read(); err != nil || code != 'c' {
			t.Fatalf("RCPT TO: %c %v", code, err)
		}
		c.send('L', "From\x00 a@author.test\x00") // no answer: SMFIP_NR_HDR
		c.Close()                                 // no end of message, no abort, no quit
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+5 {
		t.Errorf("%d goroutines, %d before 20 dropped connections", n, baseline)
	}
}

// decision_timeout bounds the end of the message too: a key lookup that
// hangs past it fails open, with a header that says temperror.
func TestMessageDecisionTimeoutFailsOpen(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, m *milter.Config, o *milter.Options) {
		o.Message = true
		m.DecisionTimeout = 300 * time.Millisecond
	})
	s, err := smtptest.NewDKIMSigner("author.test", "lab", 2048)
	if err != nil {
		t.Fatal(err)
	}
	h.sb.Zone.MX("author.test", 10, "mx.accept.test").DKIMKey(s).SetFault(s.KeyName(), smtptest.Drop)
	spectest.Passing(h.sb.Zone, "author.test")
	h.play(t, goodConn(message("a@author.test"))) // the envelope's lookups, cached
	r := h.play(t, goodConn(signed(t, s, message("a@author.test"))))[0]
	got, _ := r.Header("X-MXGuard")
	if !r.Accepted() || !strings.HasPrefix(got, "temperror; domain=author.test") {
		t.Errorf("stage %s reply %q, header %q", r.Stage, r.Reply, got)
	}
}
