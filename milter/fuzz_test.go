package milter_test

import (
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// The adapter takes whatever the MTA relays from the client: addresses,
// HELO names, header values. Whatever they hold, the session must go on and
// answer with a well-formed reply or accept with one clean header.
func FuzzMilterSession(f *testing.F) {
	h := newHarness(f, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.HeaderFrom = true })
	f.Add("127.0.3.1", "mail.good.test", "mail.good.test", "a@ok.test", "r@example.net", "Sender <a@ok.test>", "4ABC", "", "OK")
	f.Add("::1", "unknown", "[IPv6:::1]", "", "<>", "=?utf-8?q?x?= <x@refused.test>", "", "alice", "FAIL")
	f.Add("IPv6:2001:db8::1", "", "localhost", "<@a,@b:u@[1.2.3.4]>", "x", "\"a\r\n b\" <c@refused.test>", "i%d%s", "\x00", "")
	f.Add("999.1.1.1", "x\ny", "\x00\xff", "a%n@b%%.test", "%s%n", "a@b@c", strings.Repeat("Q", 300), "b%%ob", "TEMP")
	f.Fuzz(func(t *testing.T, client, clientName, helo, from, rcpt, fromHeader, queueID, authUser, resolve string) {
		conn := smtptest.MilterConn{
			ClientName: clientName, HELO: helo,
			Macros: map[string]string{"{client_addr}": client, "i": queueID, "{client_resolve}": resolve},
			Messages: []smtptest.MilterMessage{
				{From: from, To: []string{rcpt}, Headers: [][2]string{{"From", fromHeader}}, Body: "x\r\n", AuthUser: authUser},
				{From: "a@ok.test", To: []string{"rcpt@example.net"}, Body: "x\r\n"},
			},
		}
		res, err := smtptest.PlayMilter("tcp", h.addr, conn)
		if err != nil {
			t.Fatalf("the session broke: %v", err)
		}
		for _, r := range res {
			switch {
			case r.Action == gomilter.ActReplyCode:
				if len(r.Reply) > 512 || !(strings.HasPrefix(r.Reply, "451 4.") || strings.HasPrefix(r.Reply, "550 5.")) || strings.ContainsAny(r.Reply, "\r\n\x00") {
					t.Fatalf("bad reply %q", r.Reply)
				}
			case !r.Accepted():
				t.Fatalf("neither refused nor accepted: %+v", r)
			default:
				v, ok := r.Header("X-MXGuard")
				if !ok || len(r.Headers) != 1 || strings.ContainsAny(v, "\r\n\x00") || len(v) > 1000 {
					t.Fatalf("bad header %q (%d headers)", v, len(r.Headers))
				}
			}
		}
	})
}

// With the message checks, the header fields and the body reach the DKIM
// verifier too: whatever they hold, the session goes on, and a message is
// accepted with one clean header (the checks are flag by default).
func FuzzMilterMessage(f *testing.F) {
	h := newHarness(f, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.Message = true })
	f.Add("v=1; a=rsa-sha256; d=ok.test; s=s1; h=from; bh=AAAA; b=AAAA", "<a@ok.test>", "List-Id", "<l.ok.test>", "x\r\n")
	f.Add("v=1; d=\x00; s=\xff", "a@ok.test, b@ok.test", "Precedence", "bulk", "\n\n.\r\n")
	f.Add("", "<<<", "X-MXGuard", "pass", strings.Repeat("y", 70000))
	f.Add("v=1;;;===", "=?utf-8?q?x?= <x@refused.test>", "From", "\tfolded\n\tvalue", "\r")
	f.Fuzz(func(t *testing.T, signature, from, name, value, body string) {
		conn := goodConn(smtptest.MilterMessage{From: "a@ok.test", To: []string{"rcpt@example.net"},
			Headers: [][2]string{{"DKIM-Signature", signature}, {"From", from}, {name, value}}, Body: body})
		res, err := smtptest.PlayMilter("tcp", h.addr, conn)
		if err != nil {
			t.Fatalf("the session broke: %v", err)
		}
		r := res[0]
		v, ok := r.Header("X-MXGuard")
		if !r.Accepted() || !ok || len(r.Headers) != 1 || strings.ContainsAny(v, "\r\n\x00") || len(v) > 1000 {
			t.Fatalf("stage %s reply %q, header %q (%d headers)", r.Stage, r.Reply, v, len(r.Headers))
		}
	})
}
