package policy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/miekg/dns"
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
