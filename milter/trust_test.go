package milter_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// rawConn speaks the milter wire protocol by hand, for what no well-behaved
// client sends.
type rawConn struct {
	t *testing.T
	net.Conn
	in *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t, c, bufio.NewReader(c)}
}

func (c *rawConn) send(code byte, data ...string) {
	c.t.Helper()
	payload := []byte(strings.Join(data, ""))
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	buf = append(buf, code)
	if _, err := c.Write(append(buf, payload...)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) read() (byte, []byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head [4]byte
	if _, err := io.ReadFull(c.in, head[:]); err != nil {
		return 0, nil, err
	}
	data := make([]byte, binary.BigEndian.Uint32(head[:]))
	if _, err := io.ReadFull(c.in, data); err != nil {
		return 0, nil, err
	}
	return data[0], data[1:], nil
}

// negotiate offers version, actions and protocol steps as an MTA does and
// returns what the milter answered.
func (c *rawConn) negotiate(version uint32, actions gomilter.OptAction, protocol gomilter.OptProtocol) (uint32, gomilter.OptAction, gomilter.OptProtocol, []byte) {
	c.t.Helper()
	offer := binary.BigEndian.AppendUint32(nil, version)
	offer = binary.BigEndian.AppendUint32(offer, uint32(actions))
	offer = binary.BigEndian.AppendUint32(offer, uint32(protocol))
	c.send('O', string(offer))
	code, data, err := c.read()
	if err != nil || code != 'O' || len(data) < 12 {
		c.t.Fatalf("option negotiation: %c %q %v", code, data, err)
	}
	return binary.BigEndian.Uint32(data), gomilter.OptAction(binary.BigEndian.Uint32(data[4:])),
		gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:])), data[12:]
}

const (
	everyAction   = gomilter.OptAction(0x1ff)
	everyProtocol = gomilter.OptProtocol(0x1fffff)
)

// mxguard answers option negotiation as libmilter does: protocol version
// 6, and only what the MTA offered.
func TestNegotiatesVersion6LikeLibmilter(t *testing.T) {
	h := newHarness(t, nil)
	v, actions, protocol, symlist := dialRaw(t, h.addr).negotiate(6, everyAction, everyProtocol)
	if v != 6 || actions&gomilter.OptChangeHeader == 0 || protocol&gomilter.OptNoMailReply == 0 || len(symlist) == 0 {
		t.Errorf("full offer: version %d, actions %#x, protocol %#x, symbol list %q", v, actions, protocol, symlist)
	}
	v, actions, protocol, symlist = dialRaw(t, h.addr).negotiate(2, gomilter.OptAddHeader, gomilter.OptNoConnect|gomilter.OptNoBody)
	if v != 2 || actions != gomilter.OptAddHeader || protocol != gomilter.OptNoConnect|gomilter.OptNoBody || len(symlist) != 0 {
		t.Errorf("version 2 offer: version %d, actions %#x, protocol %#x, symbol list %q", v, actions, protocol, symlist)
	}
	// go-milter's own client offering Postfix's masks refuses a version-2 answer.
	client := gomilter.NewClientWithOptions("tcp", h.addr, gomilter.ClientOptions{
		Dialer: &net.Dialer{Timeout: 5 * time.Second}, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		ActionMask: everyAction, ProtocolMask: everyProtocol,
	})
	s, err := client.Session()
	if err != nil {
		t.Fatalf("a strict client: %v", err)
	}
	s.Close()
}

// A MTA that cannot skip steps or take commands without answers gets an
// answer to every command, and the verdicts are the same.
func TestOldMTAGetsAnAnswerToEveryCommand(t *testing.T) {
	h := newHarness(t, nil)
	c := dialRaw(t, h.addr)
	c.negotiate(2, gomilter.OptAddHeader|gomilter.OptQuarantine, 0)
	steps := []struct {
		code byte
		data []string
	}{
		{'C', []string{"mail.good.test\x00", "4", "\x9c\x40", "127.0.3.1\x00"}},
		{'H', []string{"mail.good.test\x00"}},
		{'M', []string{"<a@ok.test>\x00"}},
		{'R', []string{"<rcpt@example.net>\x00"}},
		{'L', []string{"Subject\x00", "hi\x00"}},
		{'N', nil},
		{'B', []string{"hello\r\n"}},
	}
	for _, s := range steps {
		c.send(s.code, s.data...)
		if code, data, err := c.read(); err != nil || code != 'c' {
			t.Fatalf("after %c: %c %q %v", s.code, code, data, err)
		}
	}
	c.send('E')
	code, data, err := c.read()
	if err != nil || code != 'h' || !strings.HasPrefix(string(data), "X-MXGuard\x00pass; domain=ok.test") {
		t.Errorf("end of message: %c %q %v", code, data, err)
	}
}

// A client's own X-MXGuard field, in any case, never reaches the
// recipient next to mxguard's.
func TestForgedHeaderIsRemoved(t *testing.T) {
	h := newHarness(t, nil)
	msg := message("a@ok.test")
	msg.Headers = append(msg.Headers, [2]string{"X-MXGuard", "pass; domain=forged.example"}, [2]string{"x-mxguard", "pass"})
	r := h.play(t, goodConn(msg))[0]
	want := []smtptest.HeaderChange{{Index: 2, Name: "X-MXGuard"}, {Index: 1, Name: "X-MXGuard"}}
	if fmt.Sprint(r.HeaderChanges) != fmt.Sprint(want) {
		t.Errorf("header changes %v, want %v", r.HeaderChanges, want)
	}
	if got, _ := r.Header("X-MXGuard"); !strings.HasPrefix(got, "pass; domain=ok.test") || len(r.Headers) != 1 {
		t.Errorf("added %v", r.Headers)
	}
	if r := h.play(t, goodConn(message("a@ok.test")))[0]; len(r.HeaderChanges) != 0 {
		t.Errorf("a message without a forged field: changes %v", r.HeaderChanges)
	}
}

// go-milter asks for a new backend after a final answer, one it can give
// itself to a malformed SMFIC_CONNECT, from the session's goroutine while
// the accept loop serves other connections: no session may take another's
// connection (the race detector watches).
func TestMalformedConnectDoesNotRaceOtherSessions(t *testing.T) {
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c := dialRaw(t, h.addr)
			c.negotiate(6, everyAction, 0)
			c.send('C', "host\x00", "4") // no port and address
			if code, _, err := c.read(); err != nil || code != 't' {
				t.Errorf("malformed connect: %c %v", code, err)
			}
			c.send('H', "mail.good.test\x00") // the connection goes on
			if code, _, err := c.read(); err != nil || code != 'c' {
				t.Errorf("HELO after a malformed connect: %c %v", code, err)
			}
		}()
		go func() {
			defer wg.Done()
			res, err := smtptest.PlayMilter("tcp", h.addr, goodConn(message("a@ok.test"), message("a@refused.test")))
			if err != nil || len(res) != 2 || !res[0].Accepted() || !strings.HasPrefix(res[1].Reply, "451 ") {
				t.Errorf("a session beside malformed ones: %+v %v", res, err)
			}
		}()
	}
	wg.Wait()
}

// A transaction whose MTA goes silent is dropped after
// milter.transaction_timeout, and its slot is free again.
func TestSilentTransactionIsDropped(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.TransactionTimeout = 300 * time.Millisecond
		o.IdleTimeout = time.Hour
	})
	c := dialRaw(t, h.addr)
	c.negotiate(6, everyAction, everyProtocol)
	c.send('M', "<a@ok.test>\x00")
	began := time.Now()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.in.ReadByte(); err != io.EOF {
		t.Fatalf("the silent transaction was not closed: %v", err)
	}
	if took := time.Since(began); took > 20*time.Second { // the idle timeout is an hour
		t.Errorf("closed after %v", took)
	}
	testkit.WaitFor(t, "the session slot to be free", func() bool { return h.m.ActiveSessions() == 0 })
}

// Fifty sessions that each send a megabyte of macros and then hold their
// transaction open keep none of it: what a session stores is bounded.
func TestHugeMacrosAreNotKept(t *testing.T) {
	h := newHarness(t, nil)
	huge := strings.Repeat("x", 600<<10) // with the rest, just under go-milter's 1 MB packet limit
	before := heapInUse()
	for i := 0; i < 50; i++ {
		c := dialRaw(t, h.addr)
		c.negotiate(6, everyAction, everyProtocol)
		c.send('D', "M", "{client_name}\x00", huge, "\x00", "j\x00", huge[:300<<10], "\x00")
		c.send('H', huge, "\x00")
		c.send('M', "<a@ok.test>\x00")
		c.send('R', "<rcpt@example.net>\x00") // answered: everything before it was read
		if code, _, err := c.read(); err != nil || code != 'c' {
			t.Fatalf("session %d: RCPT answered %c %v", i, code, err)
		}
	}
	if grown := heapInUse() - before; grown > 16<<20 {
		t.Errorf("50 silent sessions hold %d MB (%d KB each)", grown>>20, grown/50>>10)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// Text from the client is quoted shortened in the log.
func TestLogQuotesRemoteTextShortened(t *testing.T) {
	var log testkit.SyncBuffer
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.Log = slog.New(slog.NewTextHandler(&log, nil))
	})
	conn := goodConn(message("a@ok.test"))
	conn.HELO = "mail." + strings.Repeat("h", 100<<10) + ".test"
	conn.Messages[0].QueueID = strings.Repeat("Q", 10<<10)
	h.play(t, conn)
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "decision") && len(line) > 2048 {
			t.Errorf("a decision log line of %d bytes", len(line))
		}
	}
	if !strings.Contains(log.String(), "hhh...") {
		t.Errorf("the HELO is not quoted shortened:\n%.500s", log.String())
	}
}

// checks.header_from: every address of every From field, a root dot
// accepted, the From domains' own findings in the header, and nothing for
// a bounce.
func TestHeaderFromEveryAddress(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.HeaderFrom = true })
	msg := message("a@ok.test")
	msg.Headers = [][2]string{{"From", "a@ok.test, b@implicit.test"}, {"Subject", "x"}, {"From", "<c@refused.test.>"}}
	r := h.play(t, goodConn(msg))[0]
	if !strings.HasPrefix(r.Reply, "451 4.7.1 refused.test: mx.port25 fail") {
		t.Errorf("a second From field, with a root dot: %s %q", r.Stage, r.Reply)
	}
	msg.Headers = [][2]string{{"From", "a@ok.test, b@implicit.test"}}
	r = h.play(t, goodConn(msg))[0]
	if got, _ := r.Header("X-MXGuard"); got != "flag; domain=ok.test; ip=127.0.3.1; from=implicit.test; mx.records=warn" {
		t.Errorf("the second address of a From field: %q", got)
	}
	bounce := message("")
	bounce.Headers = [][2]string{{"From", "MAILER-DAEMON@refused.test"}}
	r = h.play(t, goodConn(bounce))[0]
	if got, _ := r.Header("X-MXGuard"); !r.Accepted() || got != "pass; domain=<>; ip=127.0.3.1" {
		t.Errorf("a bounce's From: %s %q %q", r.Stage, r.Reply, got)
	}
}

// Mail submitted locally (Postfix non_smtpd_milters: {client_port} is 0)
// cannot be refused per recipient; a defer or reject verdict becomes
// milter.non_smtp_action at end of message, never a 4xx that would keep it
// in the queue for ever.
func TestNonSMTPMailReachesAFinalState(t *testing.T) {
	local := func(from string) smtptest.MilterConn {
		return smtptest.MilterConn{ClientIP: "127.0.0.1", ClientName: "localhost", HELO: "localhost",
			Macros: map[string]string{"{client_port}": "0"}, Messages: []smtptest.MilterMessage{message(from)}}
	}
	cases := []struct {
		action      policy.Verdict
		from        string
		stage       string
		header      string
		quarantine  string
		replyPrefix string
	}{
		{policy.Pass, "a@refused.test", "eom", "hold; domain=refused.test; ip=127.0.0.1; mx.port25=fail", "mxguard: refused.test: mx.port25 fail", ""},
		{policy.Hold, "a@[127.0.0.1]", "eom", "hold; domain=[127.0.0.1]; ip=127.0.0.1; domain.syntax=fail", "mxguard: [127.0.0.1]: domain.syntax fail", ""},
		{policy.Flag, "a@refused.test", "eom", "flag; domain=refused.test; ip=127.0.0.1; mx.port25=fail", "", ""},
		{policy.Reject, "a@refused.test", "eom", "", "", "550 5.7.1 refused.test: mx.port25 fail"},
		{policy.Reject, "a@ok.test", "eom", "pass; domain=ok.test; ip=127.0.0.1", "", ""},
	}
	for _, c := range cases {
		t.Run(c.action.String()+" "+c.from, func(t *testing.T) {
			h := newHarness(t, func(p *policy.Config, m *milter.Config, _ *milter.Options) {
				p.SkipIdentityNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				m.NonSMTPAction = c.action
			})
			r := h.play(t, local(c.from))[0]
			got, _ := r.Header("X-MXGuard")
			if r.Stage != c.stage || got != c.header || !strings.HasPrefix(r.Quarantine, c.quarantine) ||
				(c.quarantine == "") != (r.Quarantine == "") || !strings.HasPrefix(r.Reply, c.replyPrefix) {
				t.Errorf("stage %s, header %q, quarantine %q, reply %q", r.Stage, got, r.Quarantine, r.Reply)
			}
		})
	}
	// A deferral by on_temperror is never bounced: at most held.
	h := newHarness(t, func(p *policy.Config, m *milter.Config, _ *milter.Options) {
		p.SkipIdentityNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		p.Policy.OnTempError = policy.Defer
		m.NonSMTPAction = policy.Reject
	})
	r := h.play(t, local("a@servfail.test"))[0]
	if got, _ := r.Header("X-MXGuard"); r.Reply != "" || !strings.HasPrefix(got, "hold; ") || r.Quarantine == "" {
		t.Errorf("temperror deferral of local mail: reply %q, header %q, quarantine %q", r.Reply, got, r.Quarantine)
	}
}

// policy.mode: report refuses and holds nothing; the header says what
// enforcement would have done.
func TestReportModeEnforcesNothing(t *testing.T) {
	h := newHarness(t, func(p *policy.Config, _ *milter.Config, _ *milter.Options) {
		p.Policy.ReportOnly = true
		p.Policy.Actions[policy.MXTargets] = policy.Hold
	})
	for from, header := range map[string]string{
		"a@ok.test":         "pass; mode=report; domain=ok.test; ip=127.0.3.1",
		"a@refused.test":    "defer; mode=report; domain=refused.test; ip=127.0.3.1; mx.port25=fail",
		"a@[127.0.0.1]":     "reject; mode=report; domain=[127.0.0.1]; ip=127.0.3.1; domain.syntax=fail",
		"a@literal-mx.test": "hold; mode=report; domain=literal-mx.test; ip=127.0.3.1; mx.targets=fail",
	} {
		r := h.play(t, goodConn(message(from)))[0]
		if got, _ := r.Header("X-MXGuard"); !r.Accepted() || got != header || r.Quarantine != "" {
			t.Errorf("%s: %s %q, header %q, quarantine %q", from, r.Stage, r.Reply, got, r.Quarantine)
		}
	}
	if h.rec.count("defer") != 1 || h.rec.count("reject") != 1 {
		t.Errorf("decisions are counted by the verdict enforcement would apply: %v", h.rec.outcomes)
	}
}
