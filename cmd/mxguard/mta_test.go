package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/mtalab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

// These tests run a real Postfix and a real Sendmail (Debian's packages,
// see internal/mtalab) with mxguard as their milter, in front of the check-table
// sandbox, relaying to a go-smtp sink. CI provides both (.ci/run); without
// them the tests fail under CI=true and are skipped elsewhere.

// requireMTA fails under CI and skips elsewhere when the MTA cannot run.
func requireMTA(t *testing.T, mta string) {
	t.Helper()
	err := mtalab.Available(mta)
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v; CI must provide it (.ci/run)", err)
	}
	t.Skip(err)
}

// eachMTA runs test as a subtest per MTA.
func eachMTA(t *testing.T, test func(t *testing.T, mta string)) {
	for _, mta := range mtalab.MTAs {
		t.Run(mta, func(t *testing.T) { test(t, mta) })
	}
}

// mtaRig is mxguard (a child process) for the sandbox, an MTA lab using
// it, and the sink the MTA relays to.
type mtaRig struct {
	sb      *smtptest.Sandbox
	mxguard *daemonProc
	cfg     string // mxguard's configuration file
	milter  string // its socket, host:port
	policy  string // its policy service socket, host:port, when the lab uses it
	lab     *mtalab.Lab
	sink    *smtptest.SMTPServer
}

// viaPolicyService is the rig of Postfix asking mxguard's policy service
// (configs/postfix/policy-service.cf) instead of its milter.
const viaPolicyService = "postfix-policy"

// startRig starts the rig for mta ("postfix", "sendmail" or
// viaPolicyService); extraConfig is appended to mxguard's configuration,
// and milterConfig lines go into its milter section.
func startRig(t *testing.T, mta, extraConfig string, milterConfig ...string) *mtaRig {
	t.Helper()
	return startSignedRig(t, mta, "", extraConfig, milterConfig...)
}

// startSignedRig is startRig with a DKIM signer's milter (signer) before
// mxguard's, as configs/ shows; "" for none.
func startSignedRig(t *testing.T, mta, signer, extraConfig string, milterConfig ...string) *mtaRig {
	t.Helper()
	front := "milter"
	if mta == viaPolicyService {
		mta, front = "postfix", "policy"
	}
	requireMTA(t, mta)
	r := &mtaRig{sb: spectest.Sandbox(t)}
	var err error
	// Not on 127.0.0.1: Sendmail takes that for itself.
	if r.sink, err = smtptest.StartSMTP("127.0.0.2:0", smtptest.Accept); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.sink.Close() })
	r.milter = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	r.cfg = filepath.Join(t.TempDir(), "mxguard.yaml")
	// Only the MTA's own user may hold a session, as configs/ recommends:
	// every test through a real MTA proves its connections are told apart.
	mtaUser := map[string]string{"postfix": "postfix", "sendmail": "root"}[mta]
	milterConfig = append(milterConfig, "allow_users: ["+mtaUser+"]")
	if front == "policy" {
		r.policy = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		extraConfig += "policy_service:\n  listen: inet:" + r.policy + "\n  allow_users: [" + mtaUser + "]\n"
	}
	cfg := sandboxConfig(r.sb, "inet:"+r.milter, freeTCPPort(t), extraConfig)
	for _, line := range milterConfig {
		cfg = strings.Replace(cfg, "milter:\n", "milter:\n  "+line+"\n", 1)
	}
	if signer != "" { // a relay that signs is one whose messages mxguard judges
		cfg = withMessageChecks(cfg)
	}
	writeFile(t, r.cfg, cfg)
	r.mxguard = startDaemon(t, r.cfg, "tcp", r.milter)
	opts := mtalab.Options{Milter: "inet:" + r.milter, Signer: signer, Relay: r.sink.Addr}
	if front == "policy" {
		opts = mtalab.Options{PolicyService: "inet:" + r.policy, Relay: r.sink.Addr}
	}
	if r.lab, err = mtalab.Start(mta, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", mta, r.lab.Log())
		}
		r.lab.Stop()
	})
	return r
}

// sendScenario sends, over one connection, a message of every verdict (with
// mx.targets: hold): the HELO name and client must hold for every message,
// refusals in between included. It checks the SMTP answers.
func sendScenario(t *testing.T, rig *mtaRig) {
	t.Helper()
	errs := sendSession(t, rig.lab.Addr, "127.0.3.1", "mail.good.test",
		mail{"a@ok.test", "passing"},
		mail{"a@some-refused.test", "flagged"},
		mail{"a@refused.test", "deferred"},
		mail{"a@[127.0.0.1]", "rejected"},
		mail{"a@literal-mx.test", "held"},
		mail{"", "bounce"},
		mail{"b@ok.test", "passing-again"},
	)
	wantCodes := []int{0, 0, 451, 550, 0, 0, 0}
	for i, err := range errs {
		if replyCode(err) != wantCodes[i] || (wantCodes[i] == 0) != (err == nil) {
			t.Errorf("message %d: %v, want code %d", i, err, wantCodes[i])
		}
	}
	// The milter's reply is the MTA's; Postfix's policy client puts its own
	// words before the text ("Recipient address rejected: ").
	want := "4.7.1 refused.test: mx.port25 fail"
	if rig.policy != "" {
		want = "refused.test: mx.port25 fail"
	}
	if e := fmt.Sprint(errs[2]); !strings.Contains(e, "4.7.1 ") || !strings.Contains(e, want) || !strings.Contains(e, "Fix: ") {
		t.Errorf("the deferral does not say what to fix: %v", errs[2])
	}
}

// mail is one message for the SMTP client.
type mail struct {
	from, subject string
}

// dialSMTP connects to the MTA at addr from clientIP and greets with helo.
func dialSMTP(t *testing.T, addr, clientIP, helo string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "mta.lab.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(helo); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// sendSession sends msgs over one SMTP connection from clientIP, greeting
// with helo. It returns one error per message (nil: accepted).
func sendSession(t *testing.T, addr, clientIP, helo string, msgs ...mail) []error {
	t.Helper()
	c := dialSMTP(t, addr, clientIP, helo)
	defer c.Close()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = sendOne(c, m)
		if errs[i] != nil {
			c.Reset()
		}
	}
	c.Quit()
	return errs
}

func sendOne(c *smtp.Client, m mail) error {
	// Every message carries a forged mxguard header, which must not survive.
	return deliver(c, m.from, fmt.Sprintf("From: <%s>\r\nTo: <user@remote.example>\r\nSubject: %s\r\nMessage-ID: <%s@lab.test>\r\n"+
		"X-MXGuard: pass; domain=forged.example\r\n\r\nbody of %s\r\n", m.from, m.subject, m.subject, m.subject))
}

// deliver sends one message from envelope to the lab's recipient.
func deliver(c *smtp.Client, envelope, message string) error {
	if err := c.Mail(envelope); err != nil {
		return err
	}
	if err := c.Rcpt("user@remote.example"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, message); err != nil {
		return err
	}
	return w.Close()
}

func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// waitSink waits until the sink holds n messages.
func waitSink(t *testing.T, sink *smtptest.SMTPServer, n int) []smtptest.Message {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(sink.Messages()) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	msgs := sink.Messages()
	if len(msgs) < n {
		t.Fatalf("the sink got %d messages, want %d", len(msgs), n)
	}
	return msgs
}

func bySubject(msgs []smtptest.Message) map[string][]string {
	m := map[string][]string{}
	for _, msg := range msgs {
		data := string(msg.Data)
		i := strings.Index(data, "Subject: ")
		if i < 0 {
			continue
		}
		subject := strings.TrimSpace(strings.SplitN(data[i+len("Subject: "):], "\n", 2)[0])
		m[subject] = append(m[subject], data)
	}
	return m
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

func TestMTAEndToEnd(t *testing.T) { eachMTA(t, testEndToEnd) }

func testEndToEnd(t *testing.T, mta string) {
	rig := startRig(t, mta, "policy:\n  actions:\n    mx.targets: hold\n")
	lab, sink, d := rig.lab, rig.sink, rig.mxguard
	sendScenario(t, rig)
	errs := sendSession(t, lab.Addr, "127.0.3.1", "other.good.test",
		mail{"a@ok.test", "helo-mismatch-1"}, mail{"a@ok.test", "helo-mismatch-2"})
	for i, err := range errs {
		if err != nil {
			t.Errorf("HELO mismatch message %d: %v", i, err)
		}
	}

	got := bySubject(waitSink(t, sink, 6))
	want := map[string]string{
		"passing":         "X-MXGuard: pass; domain=ok.test; ip=127.0.3.1\r\n",
		"flagged":         "X-MXGuard: flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn\r\n",
		"bounce":          "X-MXGuard: pass; domain=<>; ip=127.0.3.1\r\n",
		"passing-again":   "X-MXGuard: pass; domain=ok.test; ip=127.0.3.1\r\n",
		"helo-mismatch-1": "X-MXGuard: flag; domain=ok.test; ip=127.0.3.1; helo.matches-ptr=warn\r\n",
		"helo-mismatch-2": "X-MXGuard: flag; domain=ok.test; ip=127.0.3.1; helo.matches-ptr=warn\r\n",
	}
	for subject, header := range want {
		if len(got[subject]) != 1 {
			t.Errorf("%s: delivered %d times", subject, len(got[subject]))
			continue
		}
		data := got[subject][0]
		if strings.Count(data, "X-MXGuard:") != 1 || !strings.Contains(data, header) {
			t.Errorf("%s: header %q missing, or the forged one kept:\n%s", subject, header, data)
		}
		if !strings.HasSuffix(data, "\r\n\r\nbody of "+subject+"\r\n") || !strings.Contains(data, "Message-ID: <"+subject+"@lab.test>") {
			t.Errorf("%s: the message was changed:\n%s", subject, data)
		}
	}
	for _, subject := range []string{"deferred", "rejected", "held"} {
		if len(got[subject]) != 0 {
			t.Errorf("%s reached the sink", subject)
		}
	}
	held, err := lab.Held()
	if err != nil || len(held) != 1 {
		t.Fatalf("held: %v (%v), want the one held message", held, err)
	}
	if mta == "sendmail" && !strings.HasPrefix(held[0].Reason, "mxguard: literal-mx.test: mx.targets fail") {
		t.Errorf("the quarantine reason: %q", held[0].Reason)
	}
	// One log line per decision, with the MTA's queue ID once it has one.
	log := d.log.String()
	for _, want := range []string{
		"queue_id=" + held[0].ID + " verdict=hold subject=envelope domain=literal-mx.test",
		"verdict=defer subject=envelope domain=refused.test",
		"verdict=reject subject=envelope domain=[127.0.0.1]",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	// Sendmail's own macros: its view of the client is logged beside
	// mxguard's findings (the HELO, from the HELO command or macro s, is
	// what the helo-mismatch messages were judged on).
	if mta == "sendmail" && !strings.Contains(log, "client_resolve=") {
		t.Error("the log lacks Sendmail's {client_resolve}")
	}
	if n := strings.Count(log, "msg=decision"); n != 9 {
		t.Errorf("%d decision lines for 9 messages:\n%s", n, log)
	}
}

// Killing mxguard mid-stream loses nothing: while several clients send a
// steady stream, mxguard is killed (SIGKILL) and restarted. The MTA answers
// 451 while it is down (Postfix milter_default_action = tempfail, Sendmail
// F=T), the clients send those messages again, and every message arrives
// exactly once.
func TestMTASurvivesMxguardKill(t *testing.T) { eachMTA(t, testSurvivesKill) }

func testSurvivesKill(t *testing.T, mta string) {
	rig := startRig(t, mta, "")
	lab, sink, d := rig.lab, rig.sink, rig.mxguard

	const total, senders, killAt = 200, 4, 60
	var next, sent, firstTry, deferrals atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				m := mail{"a@ok.test", fmt.Sprintf("stream-%03d", i)}
				for attempt := 0; ; attempt++ { // a sending MTA retries a 451
					err := sendSession(t, lab.Addr, "127.0.3.1", "mail.good.test", m)[0]
					if err == nil {
						if attempt == 0 {
							firstTry.Add(1)
						}
						break
					}
					if replyCode(err) != 451 {
						t.Errorf("%s: %v, want a 451 while mxguard is down", m.subject, err)
						return
					}
					deferrals.Add(1)
					time.Sleep(200 * time.Millisecond)
				}
				if sent.Add(1) == killAt {
					close(killed)
				}
			}
		}()
	}
	<-killed
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.done <- nil
	time.Sleep(1500 * time.Millisecond) // the stream goes on, into 451s
	startDaemon(t, rig.cfg, "tcp", rig.milter)
	wg.Wait()

	got := bySubject(waitSink(t, sink, total))
	lost, duplicated := 0, 0
	for i := 0; i < total; i++ {
		subject := fmt.Sprintf("stream-%03d", i)
		switch n := len(got[subject]); {
		case n == 0:
			lost++
		case n > 1:
			duplicated++
		case !strings.Contains(got[subject][0], "X-MXGuard: pass; domain=ok.test"):
			t.Errorf("%s arrived without the header", subject)
		}
	}
	retried := int64(total) - firstTry.Load()
	if lost != 0 || duplicated != 0 || deferrals.Load() == 0 {
		t.Errorf("lost %d, duplicated %d, deferrals %d", lost, duplicated, deferrals.Load())
	}
	t.Logf("sent %d: delivered on the first try %d, deferred (451) and delivered later %d (%d deferrals), lost %d",
		total, firstTry.Load(), retried, deferrals.Load(), lost)
}

// Mail submitted with Postfix's sendmail command reaches mxguard through
// non_smtpd_milters (the documented snippet), where nothing can be refused
// per recipient: every message must reach a final state, none may stay in
// the maildrop or the deferred queue.
func TestPostfixLocalSubmission(t *testing.T) {
	message := func(subject string) string {
		return "From: <someone@lab.test>\nTo: <user@remote.example>\nSubject: " + subject + "\n\nbody of " + subject + "\n"
	}
	// The default, non_smtp_action: hold.
	rig := startRig(t, "postfix", "")
	for _, m := range []mail{{"a@ok.test", "local-pass"}, {"a@refused.test", "local-defer"}, {"a@bad_domain.test", "local-reject"}} {
		if err := rig.lab.Sendmail(m.from, "user@remote.example", message(m.subject)); err != nil {
			t.Fatal(err)
		}
	}
	got := bySubject(waitSink(t, rig.sink, 1))
	// The rig checks the identity of loopback clients too (identity.skip_networks: []).
	if len(got["local-pass"]) != 1 || !strings.Contains(got["local-pass"][0], "X-MXGuard: flag; domain=ok.test; ip=127.0.0.1; helo.syntax=fail; client.ptr=fail\r\n") {
		t.Errorf("the passing message: %q", got["local-pass"])
	}
	// pickup takes each message from the maildrop in its own time: wait
	// for both to be held, then see that nothing else is queued.
	testkit.WaitFor(t, "the defer-class and the reject-class message to be held", func() bool {
		held, err := rig.lab.Held()
		return err == nil && len(held) == 2
	})
	waitQueued(t, rig.lab, 2)
	log := rig.mxguard.log.String()
	for _, want := range []string{
		"verdict=defer subject=envelope domain=refused.test",
		"verdict=reject subject=envelope domain=bad_domain.test",
		`applied="hold (not received over SMTP; milter.non_smtp_action)"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}

	// non_smtp_action: reject bounces to the sender.
	rig = startRig(t, "postfix", "", "non_smtp_action: reject")
	if err := rig.lab.Sendmail("a@refused.test", "user@remote.example", message("local-bounce")); err != nil {
		t.Fatal(err)
	}
	msgs := waitSink(t, rig.sink, 1)
	if m := msgs[0]; m.From != "" || len(m.To) != 1 || m.To[0] != "a@refused.test" ||
		!strings.Contains(string(m.Data), "Status: 5.7.1") || !strings.Contains(string(m.Data), "refused.test: mx.port25 fail") ||
		!strings.Contains(string(m.Data), "Subject: local-bounce") {
		t.Errorf("the bounce: from %q to %v:\n%s", m.From, m.To, m.Data)
	}
	waitQueued(t, rig.lab, 0)
	if strings.Contains(rig.lab.Log(), "can't reject recipient") {
		t.Error("Postfix was asked to refuse a recipient of a local submission")
	}
}

// waitQueued waits until the lab's queues hold n messages: mail left in
// maildrop or deferred would loop.
func waitQueued(t *testing.T, lab *mtalab.Lab, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if got, err = lab.Queued(); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
	}
	t.Fatalf("%d messages queued, want %d", got, n)
}

// policy.mode: report through a real Postfix: everything is delivered, with
// the verdict enforcement would have applied in the header.
func TestPostfixReportMode(t *testing.T) {
	rig := startRig(t, "postfix", "policy:\n  mode: report\n  actions:\n    mx.targets: hold\n")
	errs := sendSession(t, rig.lab.Addr, "127.0.3.1", "mail.good.test",
		mail{"a@refused.test", "would-defer"}, mail{"a@[127.0.0.1]", "would-reject"}, mail{"a@literal-mx.test", "would-hold"})
	for i, err := range errs {
		if err != nil {
			t.Errorf("message %d refused in report mode: %v", i, err)
		}
	}
	got := bySubject(waitSink(t, rig.sink, 3))
	for subject, header := range map[string]string{
		"would-defer":  "X-MXGuard: defer; mode=report; domain=refused.test; ip=127.0.3.1; mx.port25=fail\r\n",
		"would-reject": "X-MXGuard: reject; mode=report; domain=[127.0.0.1]; ip=127.0.3.1; domain.syntax=fail\r\n",
		"would-hold":   "X-MXGuard: hold; mode=report; domain=literal-mx.test; ip=127.0.3.1; mx.targets=fail\r\n",
	} {
		if len(got[subject]) != 1 || !strings.Contains(got[subject][0], header) {
			t.Errorf("%s: %q", subject, got[subject])
		}
	}
	if held, err := rig.lab.Held(); err != nil || len(held) != 0 {
		t.Errorf("held in report mode: %v %v", held, err)
	}
	if log := rig.mxguard.log.String(); strings.Count(log, "mode=report") != 3 {
		t.Errorf("decision lines without the mode:\n%s", log)
	}
}

// The same scenarios through Postfix's check_policy_service and mxguard's
// policy front end (configs/postfix/policy-service.cf): headers prepended
// once per message, 451, 550 and HOLD, several messages per connection.
// A policy service cannot remove the forged header the client sent; the
// milter does.
func TestPostfixPolicyServiceEndToEnd(t *testing.T) {
	rig := startRig(t, viaPolicyService, "policy:\n  actions:\n    mx.targets: hold\n")
	sendScenario(t, rig)
	got := bySubject(waitSink(t, rig.sink, 4))
	for subject, header := range map[string]string{
		"passing":       "X-MXGuard: pass; domain=ok.test; ip=127.0.3.1\r\n",
		"flagged":       "X-MXGuard: flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn\r\n",
		"bounce":        "X-MXGuard: pass; domain=<>; ip=127.0.3.1\r\n",
		"passing-again": "X-MXGuard: pass; domain=ok.test; ip=127.0.3.1\r\n",
	} {
		if len(got[subject]) != 1 || strings.Count(got[subject][0], header) != 1 {
			t.Errorf("%s: want one %q:\n%q", subject, header, got[subject])
		}
	}
	held, err := rig.lab.Held()
	if err != nil || len(held) != 1 {
		t.Errorf("held: %v (%v), want the one held message", held, err)
	}
	log := rig.mxguard.log.String()
	if n := strings.Count(log, "msg=decision"); n != 7 || strings.Count(log, "front=policy") != 7 {
		t.Errorf("%d decision lines for 7 messages:\n%s", n, log)
	}
}

// Killing mxguard under the policy front end loses nothing: while it is
// down, Postfix's default_action=DUNNO lets mail through unchecked; once it
// is back, mail is checked again.
func TestPostfixPolicyServiceSurvivesMxguardKill(t *testing.T) {
	rig := startRig(t, viaPolicyService, "")
	send := func(subject string) {
		if err := sendSession(t, rig.lab.Addr, "127.0.3.1", "mail.good.test", mail{"a@ok.test", subject})[0]; err != nil {
			t.Errorf("%s: %v", subject, err)
		}
	}
	send("before")
	rig.mxguard.cmd.Process.Signal(syscall.SIGKILL)
	<-rig.mxguard.done
	rig.mxguard.done <- nil
	began := time.Now()
	send("while-down")
	t.Logf("a message while mxguard was down took %v", time.Since(began))
	startDaemon(t, rig.cfg, "tcp", rig.policy)
	send("after")
	got := bySubject(waitSink(t, rig.sink, 3))
	for subject, checked := range map[string]bool{"before": true, "while-down": false, "after": true} {
		if len(got[subject]) != 1 || strings.Contains(got[subject][0], "X-MXGuard: pass; domain=ok.test") != checked {
			t.Errorf("%s: delivered %d times, checked: want %v:\n%q", subject, len(got[subject]), checked, got[subject])
		}
	}
}
