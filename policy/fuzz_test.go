package policy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/smtptest"
)

// Addresses and domains come from untrusted clients; whatever they send,
// parsing must not panic and a domain it accepts must be a clean host name.
func FuzzParseSender(f *testing.F) {
	for _, s := range []string{"<user@example.com>", "user@Example.COM.", "<>", "", "<@a,@b:u@example.org>",
		`"a@b"@example.com`, "u@bücher.example", "u@[192.0.2.1]", "u@[IPv6:2001:db8::1]", "postmaster",
		"u@" + strings.Repeat("a", 64) + ".com", "u@xn--zz.example", "u@ex\x00ample.com", "u@example..com", "<<<@>>>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkSender(t, ParseSender(s))
		checkSender(t, ParseDomain(s))
	})
}

func checkSender(t *testing.T, snd Sender) {
	t.Helper()
	if snd.Err != nil || snd.Null || snd.Unqualified {
		return
	}
	d := snd.Domain
	if d == "" || len(d) > 253 || strings.HasSuffix(d, ".") || d != strings.ToLower(d) {
		t.Fatalf("accepted domain %q", d)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			t.Fatalf("accepted domain %q has %q", d, c)
		}
	}
	if again, err := NormalizeDomain(d); err != nil || again != d {
		t.Fatalf("normalising %q again gives %q, %v", d, again, err)
	}
}

func FuzzParseHELO(f *testing.F) {
	for _, s := range []string{"mail.example.com", "[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost", "192.0.2.1",
		"[IPv6:::ffff:1.2.3.4]", "[]", "[IPv6:]", "MAIL.Example.COM.", "mail_host.example", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHELO(s)
		if err != nil {
			if !utf8.ValidString(err.Error()) && utf8.ValidString(s) {
				t.Fatalf("error %q is not UTF-8", err)
			}
			return
		}
		switch {
		case h.Literal.IsValid() == (h.Name != ""):
			t.Fatalf("%q: name %q and literal %v", s, h.Name, h.Literal)
		case h.Name != "":
			checkSender(t, Sender{Domain: h.Name})
			if !strings.Contains(h.Name, ".") {
				t.Fatalf("%q accepted as a single label", s)
			}
		}
	})
}

// The greeting reader faces whatever a remote host sends.
func FuzzReadGreeting(f *testing.F) {
	for _, s := range []string{"220 mx.example.com ESMTP\r\n", "220-a\r\n220-b\r\n220 c\r\n", "554 no\r\n", "220\n",
		"SSH-2.0-OpenSSH\r\n", "22", "220-" + strings.Repeat("x", 600), strings.Repeat("220-x\r\n", 1000), "\x00\x01\r\n", "220 \xff\xfe\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(io.LimitReader(bytes.NewReader(b), maxGreetingBytes), maxGreetingLine)
		r := readGreeting(br)
		if r.Outcome != OutcomeAccept && r.Outcome != OutcomeSMTPRefusal && r.Outcome != OutcomeNotSMTP {
			t.Fatalf("outcome %s", r.Outcome)
		}
		if r.Outcome.SpeaksSMTP() != (r.Code >= 200 && r.Code <= 599) {
			t.Fatalf("outcome %s with code %d", r.Outcome, r.Code)
		}
		for _, s := range []string{r.Greeting, r.Detail} {
			if strings.ContainsAny(s, "\r\n\x00") || utf8.RuneCountInString(s) > 130 {
				t.Fatalf("unsafe text %q", s)
			}
		}
	})
}

// DNS answers are untrusted too: any message that unpacks must fold into an
// Answer within the limits, or into an error, never a panic.
func FuzzParseResponse(f *testing.F) {
	for _, rr := range []string{"example.com. 60 IN MX 10 mx.example.com.", "example.com. 60 IN CNAME example.com.",
		"example.com. 60 IN CNAME other.example.", "example.com. 60 IN A 192.0.2.1", "example.com. 60 IN MX 0 ."} {
		m := new(dns.Msg).SetQuestion("example.com.", dns.TypeMX)
		r, _ := dns.NewRR(rr)
		m.Answer = append(m.Answer, r)
		b, _ := m.Pack()
		f.Add(b, uint16(dns.TypeMX))
	}
	f.Fuzz(func(t *testing.T, b []byte, qtype uint16) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		ans := &dnsAnswer{}
		_, _, err := parseResponse(m, "example.com.", qtype, ans, map[string]bool{"example.com.": true}, 8)
		if err != nil {
			return
		}
		if len(ans.MX) > maxMXRecords || len(ans.Addrs) > maxAddrRecords || len(ans.Names) > maxPTRRecords || len(ans.Aliases) > 8 {
			t.Fatalf("limits exceeded: %d MX, %d addrs, %d names, %d aliases", len(ans.MX), len(ans.Addrs), len(ans.Names), len(ans.Aliases))
		}
	})
}

// A message comes from an untrusted client, header and signatures alike:
// whatever it holds, the message checks give a status with a printable
// detail, and never panic.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		"From: a@fuzz.test\r\n\r\nbody\r\n",
		"DKIM-Signature: v=1; a=rsa-sha256; d=fuzz.test; s=s1; h=from; bh=AAAA; b=AAAA\r\nFrom: a@fuzz.test\r\n\r\nx\r\n",
		"DKIM-Signature: v=1; d=\x00; s=\xff; h=; bh=; b=\nFrom: <<@>>\n\n",
		"From: a@fuzz.test, b@fuzz.test\nList-Unsubscribe: <https://x>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n\n",
		"\r\n\r\n", "From:\r\n\tfolded@fuzz.test\r\n", ":\r\n \r\n\x00",
	} {
		f.Add([]byte(s))
	}
	z := smtptest.NewZone()
	z.TXT("s1._domainkey.fuzz.test", "v=DKIM1; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA").
		TXT("_dmarc.fuzz.test", "v=DMARC1; p=reject")
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	e := fuzzEngine(f, srv.Addr)
	req := Request{Sender: "a@fuzz.test"}
	env := &Report{Domain: "fuzz.test", Checks: []Result{{ID: SPFRelay, Status: StatusPass}}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := e.NewMessage()
		m.Write(raw)
		rep := e.EvaluateMessage(context.Background(), env, req, m)
		for _, c := range rep.Checks {
			if c.Status > StatusFail || c.Detail != Printable(c.Detail, 1<<20) {
				t.Fatalf("%s: status %d, detail %q", c.ID, c.Status, c.Detail)
			}
		}
	})
}

func fuzzEngine(f *testing.F, server string) *Engine {
	cfg := DefaultConfig()
	cfg.Resolver = ResolverConfig{Servers: []string{server}, Timeout: 500 * time.Millisecond, Attempts: 2}
	cfg.OutboundIPs = []netip.Prefix{netip.MustParsePrefix(rigRelay + "/32")}
	e, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	return e
}
