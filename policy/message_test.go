package policy

import (
	"context"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/smtptest"
)

// messageRig is a zone and an engine whose one outbound address is
// 192.0.2.10, for the message checks: authors publish SPF and DMARC and
// sign with keys the rig makes.
type messageRig struct {
	z   *smtptest.Zone
	dns *smtptest.DNSServer
	e   *Engine
}

const rigRelay = "192.0.2.10"

func newMessageRig(t *testing.T) *messageRig {
	t.Helper()
	z := smtptest.NewZone()
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &messageRig{z: z, dns: srv, e: spfEngine(t, srv.Addr, rigRelay, "relay.example.test")}
}

// author makes domain a sender that passes SPF for the rig's relay and
// publishes DMARC record dmarc ("" for none).
func (r *messageRig) author(domain, dmarc string) {
	r.z.TXT(domain, "v=spf1 ip4:"+rigRelay+" -all")
	if dmarc != "" {
		r.z.TXT("_dmarc."+domain, dmarc)
	}
}

// check evaluates the message for the envelope sender and returns the
// report with the message checks.
func (r *messageRig) check(t *testing.T, sender, message string) *Report {
	t.Helper()
	req := Request{Sender: sender}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := evaluateDNSOnly(ctx, r.e, req)
	m := r.e.NewMessage()
	io.Copy(m, strings.NewReader(message))
	return r.e.EvaluateMessage(ctx, env, req, m)
}

// evaluateDNSOnly is the envelope's report with spf.relay alone: the
// rig's zone has public addresses that must not be probed.
func evaluateDNSOnly(ctx context.Context, e *Engine, req Request) *Report {
	return &Report{Domain: ParseSender(req.Sender).Domain, Checks: []Result{spfRelayOf(e, req)}}
}

// signer is a DKIM signer of the rig.
type signer struct{ *smtptest.DKIMSigner }

// publish makes a signer for domain with a key of bits (0: ed25519) and
// publishes its key record, or record when given.
func (r *messageRig) publish(t *testing.T, domain, selector string, bits int, record string) signer {
	t.Helper()
	s := newSigner(t, domain, selector, bits)
	if record == "" {
		record = s.Record()
	}
	r.z.TXT(s.KeyName(), record)
	return s
}

func newSigner(t *testing.T, domain, selector string, bits int) signer {
	t.Helper()
	s, err := smtptest.NewDKIMSigner(domain, selector, bits)
	if err != nil {
		t.Fatal(err)
	}
	return signer{s}
}

// sign signs message as the relay's signer would, over headerKeys (none:
// go-msgauth's choice, which includes From).
func (s signer) sign(t *testing.T, message string, headerKeys ...string) string {
	t.Helper()
	signed, err := s.Sign(message, headerKeys...)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// plainMessage is a message from author with extra header lines.
func plainMessage(from string, extra ...string) string {
	h := "From: " + from + "\r\nTo: b@example.net\r\nSubject: hello\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\nHello.\r\n"
}

// statusOf is the status and detail of check id in rep.
func statusOf(rep *Report, id CheckID) (Status, string) {
	r := rep.Check(id)
	return r.Status, r.Detail
}

func TestMessageStreamsWithoutHoldingTheBody(t *testing.T) {
	r := newMessageRig(t)
	r.author("stream.test", "v=DMARC1; p=reject")
	s := r.publish(t, "stream.test", "s1", 2048, "")
	body := strings.Repeat("a line of the body, long enough to count\r\n", 20000) // about 840 KB
	signed := s.sign(t, plainMessage("a@stream.test")[:len(plainMessage("a@stream.test"))-len("Hello.\r\n")]+body)
	m := r.e.NewMessage()
	for len(signed) > 0 { // the chunks a milter gets: 64 KiB at most
		n := min(len(signed), 65535)
		m.Write([]byte(signed[:n]))
		signed = signed[n:]
	}
	req := Request{Sender: "a@stream.test"}
	rep := r.e.EvaluateMessage(context.Background(), evaluateDNSOnly(context.Background(), r.e, req), req, m)
	if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
		t.Fatalf("dkim.signature %s: %s", st, d)
	}
	if m.header.Cap() > 0 {
		t.Errorf("the header section is still held after the message: %d octets", m.header.Cap())
	}
}

// MTAs hand milters folded header values with bare LF, and saved messages
// often have LF line ends: the signature is over CRLF all the same.
func TestMessageWithLFLineEndsVerifies(t *testing.T) {
	r := newMessageRig(t)
	r.author("lf.test", "v=DMARC1; p=reject")
	s := r.publish(t, "lf.test", "s1", 1024, "")
	signed := s.sign(t, plainMessage("a@lf.test", "X-Folded: one\r\n\ttwo"))
	rep := r.check(t, "a@lf.test", strings.ReplaceAll(signed, "\r\n", "\n"))
	if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
		t.Fatalf("dkim.signature %s: %s", st, d)
	}
}

func TestMessageLargerThanTheBoundIsNotVerified(t *testing.T) {
	r := newMessageRig(t)
	r.e.cfg.Message.MaxBytes = 64 << 10
	r.author("big.test", "v=DMARC1; p=reject")
	s := r.publish(t, "big.test", "s1", 1024, "")
	signed := s.sign(t, plainMessage("a@big.test")+strings.Repeat("x", 100<<10)+"\r\n")
	rep := r.check(t, "a@big.test", signed)
	for _, id := range []CheckID{DKIMSignature, DKIMKey, DMARCAlignment, BulkUnsubscribe} {
		if st, d := statusOf(rep, id); st != StatusTempError || !strings.Contains(d, "too large to verify here") {
			t.Errorf("%s %s: %s", id, st, d)
		}
	}
	if rep.Verdict() != Pass {
		t.Errorf("verdict %s: a message too large to verify must not be flagged", rep.Verdict())
	}
	// Retrying the same message changes nothing: never deferred for it.
	r.e.cfg.Policy.OnTempError = Defer
	if rep := r.check(t, "a@big.test", signed); rep.Verdict() != Pass {
		t.Errorf("with on_temperror: defer, verdict %s", rep.Verdict())
	}
}

func TestHugeHeaderIsBounded(t *testing.T) {
	r := newMessageRig(t)
	r.author("hdr.test", "v=DMARC1; p=none")
	m := r.e.NewMessage()
	m.Write([]byte("From: a@hdr.test\r\n"))
	line := []byte("X-Filler: " + strings.Repeat("y", 990) + "\r\n")
	for range 2 * maxHeaderBytes / len(line) {
		m.Write(line)
	}
	if m.header.Len() > maxHeaderBytes {
		t.Fatalf("the header section holds %d octets, over %d", m.header.Len(), maxHeaderBytes)
	}
	req := Request{Sender: "a@hdr.test"}
	rep := r.e.EvaluateMessage(context.Background(), evaluateDNSOnly(context.Background(), r.e, req), req, m)
	if st, d := statusOf(rep, DKIMSignature); st != StatusTempError || !strings.Contains(d, "header section is larger") {
		t.Errorf("dkim.signature %s: %s", st, d)
	}
}

// A message cut short inside its header (a client that hangs up) still
// gets results, not a verifier waiting for ever.
func TestMessageEndingInItsHeader(t *testing.T) {
	r := newMessageRig(t)
	r.author("cut.test", "v=DMARC1; p=none")
	rep := r.check(t, "a@cut.test", "From: a@cut.test\r\nSubject: no end")
	if st, d := statusOf(rep, DKIMSignature); st != StatusFail || !strings.Contains(d, "no DKIM signature") {
		t.Errorf("dkim.signature %s: %s", st, d)
	}
}

func TestMessageChecksSkipBounces(t *testing.T) {
	r := newMessageRig(t)
	rep := r.check(t, "<>", plainMessage("MAILER-DAEMON@bounce.test"))
	for _, id := range []CheckID{DKIMSignature, DKIMKey, DMARCAlignment, BulkUnsubscribe} {
		if st, d := statusOf(rep, id); st != StatusSkip || !strings.Contains(d, "bounce") {
			t.Errorf("%s %s: %s", id, st, d)
		}
	}
}

func TestMessageChecksLeftOutOrSkippedWithoutAMessage(t *testing.T) {
	r := newMessageRig(t)
	r.author("none.test", "v=DMARC1; p=none")
	rep := r.e.Evaluate(context.Background(), Request{Domain: "none.test"})
	if got := rep.Check(DKIMSignature); got.ID != "" {
		t.Errorf("a report without a message lists %s: %+v", got.ID, got)
	}
	rep = r.e.Evaluate(context.Background(), Request{Domain: "none.test", MessageSkip: "checks.message: false"})
	for _, id := range []CheckID{DKIMSignature, DKIMKey, DMARCAlignment, BulkUnsubscribe} {
		if st, d := statusOf(rep, id); st != StatusSkip || d != "checks.message: false" {
			t.Errorf("%s %s: %s", id, st, d)
		}
	}
	ids := make([]CheckID, len(rep.Checks))
	for i, c := range rep.Checks {
		ids[i] = c.ID
	}
	if want := CheckIDs(); !slices.Equal(ids, want) {
		t.Errorf("report order %v, want %v", ids, want)
	}
}

// Key and DMARC records come from the caches: a warm decision on a
// message makes no DNS query.
func TestWarmMessageDecisionMakesNoQuery(t *testing.T) {
	r := newMessageRig(t)
	r.author("warm.test", "v=DMARC1; p=reject")
	r.author("esp.test", "v=DMARC1; p=none")
	s := r.publish(t, "mail.warm.test", "s1", 2048, "")
	msg := s.sign(t, plainMessage("a@warm.test", "List-Id: <l.warm.test>"))
	first := r.check(t, "a@esp.test", msg)
	r.dns.ResetCounts()
	second := r.check(t, "a@esp.test", msg)
	if n := r.dns.Queries(); n != 0 {
		t.Errorf("the warm decision made %d DNS queries", n)
	}
	if first.Findings() != second.Findings() {
		t.Errorf("cold %s, warm %s", first.Findings(), second.Findings())
	}
}

// A key lookup that never answers does not hold the decision past its
// deadline: the message checks say temperror, and nothing is refused.
func TestMessageDecisionDoesNotWaitForADeadKeyLookup(t *testing.T) {
	r := newMessageRig(t)
	r.author("dead.test", "v=DMARC1; p=reject")
	s := r.publish(t, "dead.test", "s1", 2048, "")
	r.z.SetFault(s.KeyName(), smtptest.Drop) // the lookup takes its whole budget, about a second
	m := r.e.NewMessage()
	io.WriteString(m, s.sign(t, plainMessage("a@dead.test")))
	req := Request{Sender: "a@dead.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	rep := r.e.EvaluateMessage(ctx, evaluateDNSOnly(context.Background(), r.e, req), req, m)
	if took := time.Since(began); took > 500*time.Millisecond {
		t.Errorf("the decision took %v, past its 50 ms deadline", took)
	}
	if st, d := statusOf(rep, DKIMSignature); st != StatusTempError || !strings.Contains(d, "did not finish before the decision deadline") {
		t.Errorf("dkim.signature %s: %s", st, d)
	}
	if rep.Verdict() != Pass {
		t.Errorf("verdict %s", rep.Verdict())
	}
}

// While a key lookup hangs, the front end's writes go on up to 1 MiB
// ahead of the verifier, then wait for it: at most one lookup's budget,
// after which the message is verified as far as it can be.
func TestWritesWaitForTheVerifierAtMostALookup(t *testing.T) {
	r := newMessageRig(t)
	r.author("slow.test", "v=DMARC1; p=reject")
	s := r.publish(t, "slow.test", "s1", 2048, "")
	r.z.SetFault(s.KeyName(), smtptest.Drop) // about a second: 500 ms, two attempts
	body := strings.Repeat("a line of a body that streams on while the key lookup hangs\r\n", 2*maxBehind/60)
	signed := s.sign(t, plainMessage("a@slow.test")[:len(plainMessage("a@slow.test"))-len("Hello.\r\n")]+body)
	m := r.e.NewMessage()
	began := time.Now()
	ahead := time.Duration(0) // how long the first MiB took to write
	for rest, written := signed, 0; rest != ""; {
		n := min(len(rest), 65535)
		io.WriteString(m, rest[:n])
		rest, written = rest[n:], written+n
		if ahead == 0 && written >= maxBehind/2 {
			ahead = time.Since(began)
		}
		m.verifier.mu.Lock()
		behind := m.verifier.size
		m.verifier.mu.Unlock()
		if behind > maxBehind+65535 {
			t.Fatalf("%d octets queued for the verifier, over %d", behind, maxBehind)
		}
	}
	if ahead > 300*time.Millisecond {
		t.Errorf("the first half MiB took %v to write: the writes waited for the key lookup", ahead)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("writing took %v, more than a lookup's budget", took)
	}
	req := Request{Sender: "a@slow.test"}
	rep := r.e.EvaluateMessage(context.Background(), evaluateDNSOnly(context.Background(), r.e, req), req, m)
	if st, d := statusOf(rep, DKIMSignature); st != StatusTempError || !strings.Contains(d, "key unavailable") {
		t.Errorf("dkim.signature %s: %s", st, d)
	}
}

// Folded fields are unfolded in linear time: a megabyte of continuation
// lines is parsed at once, not in quadratic time in the session.
func TestLongFoldedFieldParsesInLinearTime(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@fold.test\r\nX-Long: start\r\n")
	for b.Len() < maxHeaderBytes-64 {
		b.WriteString("\tcontinued\r\n")
	}
	b.WriteString("\r\n")
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	fields := parseHeader([]byte(b.String()))
	runtime.ReadMemStats(&ms1)
	if len(fields) != 2 || !strings.HasPrefix(fields[1].value, "start\tcontinued") {
		t.Fatalf("%d fields: %.40q", len(fields), fields)
	}
	// Appending each line to a string copies the field so far: gigabytes.
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 16<<20 {
		t.Errorf("parsing a 1 MiB header allocated %d MiB", alloc>>20)
	}
}

// A signature field go-msgauth counts is counted here too, in the same
// order: a first line that starts with white space, a name with space
// before its colon.
func TestSignatureFieldsAreCountedAsTheVerifierCounts(t *testing.T) {
	fields := parseHeader([]byte(" X-Odd: first\r\nDKIM-Signature : v=1; s=one\r\nDKIM-Signature: v=1; s=two\r\n\r\n"))
	var sigs []string
	for _, f := range fields {
		if strings.EqualFold(f.name, dkimField) {
			sigs = append(sigs, tagValue(f.value, "s"))
		}
	}
	if strings.Join(sigs, ",") != "one,two" || len(fields) != 3 {
		t.Errorf("fields %q, signatures %v", fields, sigs)
	}
}

// A message within verifyAtEnd whose key is cached is verified at its
// end in the caller's goroutine; one whose key is not, or that outgrows
// verifyAtEnd, in the verifier's goroutine. All verify alike.
func TestMessageVerifiedWhereItCan(t *testing.T) {
	r := newMessageRig(t)
	r.author("here.test", "v=DMARC1; p=reject")
	s := r.publish(t, "here.test", "s1", 2048, "")
	small := s.sign(t, plainMessage("a@here.test"))
	large := s.sign(t, plainMessage("a@here.test", "X-Padding: "+strings.Repeat("x", verifyAtEnd)))
	req := Request{Sender: "a@here.test"}
	for _, c := range []struct {
		name, message string
		streamed      bool
	}{
		{"a small message, its key not cached", small, true},
		{"a small message, its key cached", small, false},
		{"a message past verifyAtEnd", large, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := r.e.NewMessage()
			io.Copy(m, strings.NewReader(c.message))
			rep := r.e.EvaluateMessage(context.Background(), evaluateDNSOnly(context.Background(), r.e, req), req, m)
			if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
				t.Errorf("dkim.signature %s: %s", st, d)
			}
			if m.streaming != c.streamed {
				t.Errorf("verified in the verifier's goroutine: %v, want %v", m.streaming, c.streamed)
			}
		})
	}
}

// A message closed and then judged is verified once (mxguard check
// --message closes it first).
func TestMessageClosedThenJudged(t *testing.T) {
	r := newMessageRig(t)
	r.author("closed.test", "v=DMARC1; p=reject")
	s := r.publish(t, "closed.test", "s1", 2048, "")
	req := Request{Sender: "a@closed.test"}
	for range 2 { // its key not cached, then cached
		m := r.e.NewMessage()
		io.Copy(m, strings.NewReader(s.sign(t, plainMessage("a@closed.test"))))
		m.Close()
		rep := r.e.EvaluateMessage(context.Background(), evaluateDNSOnly(context.Background(), r.e, req), req, m)
		if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
			t.Errorf("dkim.signature %s: %s", st, d)
		}
	}
}
