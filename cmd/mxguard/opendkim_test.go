package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/mtalab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// startOpenDKIM starts Debian's opendkim, set up as configs/opendkim says,
// signing with keys, or fails under CI and skips elsewhere when it is not
// installed. The keys' records are not published: each test publishes what
// it wants receivers to find.
func startOpenDKIM(t *testing.T, keys ...mtalab.SigningKey) *mtalab.OpenDKIM {
	t.Helper()
	if err := mtalab.OpenDKIMAvailable(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it (.ci/run)", err)
		}
		t.Skip(err)
	}
	o, err := mtalab.StartOpenDKIM(true, keys...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("opendkim log:\n%s", o.Log())
		}
		o.Stop()
	})
	return o
}

// sandboxTXT looks TXT records up in the sandbox, as a receiver's
// verifier would in the DNS.
func sandboxTXT(sb *smtptest.Sandbox) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		r, err := dns.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeTXT), sb.DNS.Addr)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TXT); ok {
				out = append(out, strings.Join(t.Txt, ""))
			}
		}
		return out, nil
	}
}

func TestMTAWithOpenDKIM(t *testing.T) { eachMTA(t, testWithOpenDKIM) }

// The tested recipe for a relay that signs: OpenDKIM first, then mxguard
// (configs/postfix/opendkim.cf, configs/sendmail/opendkim.mc). The message
// leaves signed with a signature a receiver verifies, and with mxguard's
// header: mxguard adds its own and removes the forged one after the
// signature was made, without breaking it.
func testWithOpenDKIM(t *testing.T, mta string) {
	requireMTA(t, mta)
	signer := startOpenDKIM(t, mtalab.SigningKey{Domain: "signed.test", Selector: "lab", Bits: 2048})
	rig := startSignedRig(t, mta, signer.Socket, "")
	rig.sb.Zone.MX("signed.test", 10, "mx.accept.test")
	spectest.Passing(rig.sb.Zone, "signed.test")
	rig.sb.Zone.TXT(signer.Keys[0].KeyName(), signer.Keys[0].Record)

	if errs := sendSession(t, rig.lab.Addr, "127.0.3.1", "mail.good.test", mail{"a@signed.test", "signed"}); errs[0] != nil {
		t.Fatalf("the signed message was refused: %v", errs[0])
	}
	data := []byte(waitSink(t, rig.sink, 1)[0].Data)
	if n := bytes.Count(data, []byte("DKIM-Signature:")); n != 1 {
		t.Fatalf("%d DKIM signatures, want OpenDKIM's one:\n%s", n, data)
	}
	if !bytes.Contains(data, []byte("X-MXGuard: pass; domain=signed.test; ip=127.0.3.1\r\n")) || bytes.Contains(data, []byte("forged.example")) {
		t.Errorf("mxguard's header is missing, or the forged one is left:\n%s", data)
	}
	verifications, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: sandboxTXT(rig.sb)})
	if err != nil || len(verifications) != 1 {
		t.Fatalf("verifying: %v, %d signatures", err, len(verifications))
	}
	if v := verifications[0]; v.Err != nil || v.Domain != "signed.test" {
		t.Errorf("the signature does not verify at the receiver: d=%s: %v\n%s", v.Domain, v.Err, data)
	}
}

func TestMTAMessageChecksAfterOpenDKIM(t *testing.T) { eachMTA(t, testMessageChecksAfterOpenDKIM) }

// What receivers will make of each message, seen after a real OpenDKIM:
// one finding per scenario, named in the header.
func testMessageChecksAfterOpenDKIM(t *testing.T, mta string) {
	requireMTA(t, mta)
	signer := startOpenDKIM(t,
		mtalab.SigningKey{Domain: "signed.test", Selector: "lab", Bits: 2048},
		mtalab.SigningKey{Domain: "weak.test", Selector: "lab", Bits: 1024},
		mtalab.SigningKey{Domain: "revoked.test", Selector: "lab", Bits: 2048},
		mtalab.SigningKey{Domain: "esp.test", Selector: "lab", Bits: 2048, Authors: []string{"customer.test"}},
	)
	rig := startSignedRig(t, mta, signer.Socket, "")
	z := rig.sb.Zone
	domains := []string{"signed.test", "weak.test", "revoked.test", "esp.test", "customer.test", "nosig.test", "other.test", "app.test"}
	for _, d := range domains {
		z.MX(d, 10, "mx.accept.test")
	}
	spectest.PassingExcept(z, policy.DMARCRecord, domains...)
	for _, d := range domains {
		z.TXT("_dmarc."+d, "v=DMARC1; p=reject")
	}
	for _, k := range signer.Keys {
		if k.Domain == "revoked.test" {
			z.TXT(k.KeyName(), "v=DKIM1; k=rsa; p=")
			continue
		}
		z.TXT(k.KeyName(), k.Record)
	}
	// A customer's application signs its own mail; a list server then adds
	// a footer.
	app, err := smtptest.NewDKIMSigner("app.test", "app", 2048)
	if err != nil {
		t.Fatal(err)
	}
	z.DKIMKey(app)
	appSigned, err := app.Sign(rfc5322("a@app.test", "changed"))
	if err != nil {
		t.Fatal(err)
	}
	oneClick := "List-Unsubscribe: <https://signed.test/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"

	scenarios := []struct {
		name, envelope, message, header string
	}{
		{"signed-aligned", "a@signed.test", rfc5322("a@signed.test", "signed-aligned"), "pass; domain=signed.test; ip=127.0.3.1"},
		{"unsigned-unaligned", "bounce@other.test", rfc5322("a@nosig.test", "unsigned-unaligned"),
			"flag; domain=other.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=fail"},
		{"other-d", "bounce@esp.test", rfc5322("a@customer.test", "other-d"), "flag; domain=esp.test; ip=127.0.3.1; dmarc.alignment=fail"},
		{"revoked", "a@revoked.test", rfc5322("a@revoked.test", "revoked"), "flag; domain=revoked.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=warn"},
		{"weak-key", "a@weak.test", rfc5322("a@weak.test", "weak-key"), "flag; domain=weak.test; ip=127.0.3.1; dkim.key=warn"},
		{"changed", "a@app.test", appSigned + "-- \r\nA footer added after signing.\r\n", "flag; domain=app.test; ip=127.0.3.1; dkim.signature=fail; dmarc.alignment=warn"},
		{"bulk-one-click", "a@signed.test", strings.Replace(rfc5322("a@signed.test", "bulk-one-click"), "\r\n\r\n", "\r\n"+oneClick+"\r\n", 1),
			"pass; domain=signed.test; ip=127.0.3.1"},
		{"bulk-no-one-click", "a@signed.test", strings.Replace(rfc5322("a@signed.test", "bulk-no-one-click"), "\r\n\r\n", "\r\nList-Id: <news.signed.test>\r\n\r\n", 1),
			"flag; domain=signed.test; ip=127.0.3.1; bulk.unsubscribe=fail"},
		{"two-authors", "a@signed.test", strings.Replace(rfc5322("a@signed.test", "two-authors"), "From: <a@signed.test>", "From: <a@signed.test>, <b@signed.test>", 1),
			"dmarc.alignment=fail"},
	}
	for _, s := range scenarios {
		if err := sendRaw(t, rig.lab.Addr, s.envelope, s.message); err != nil {
			t.Fatalf("%s was refused: %v", s.name, err)
		}
	}
	got := bySubject(waitSink(t, rig.sink, len(scenarios)))
	for _, s := range scenarios {
		data := strings.Join(got[s.name], "")
		header := headerLine(data, "X-MXGuard")
		if header != s.header && !(strings.HasPrefix(s.header, "dmarc") && strings.Contains(header, s.header)) {
			t.Errorf("%s: X-MXGuard: %q, want %q\n%s", s.name, header, s.header, data)
		}
	}
	// The details say why, in the receiver's words.
	for _, want := range []string{"key revoked", "body hash did not verify", "RSA key of 1024 bits",
		"no verifying DKIM signature has d= aligned with customer.test", "customer.test publishes p=rej",
		"without one-click unsubscribe", "the From field has 2 addresses"} {
		rig.mxguard.waitLog(t, want)
	}
}

// rfc5322 is a plain message from author with subject.
func rfc5322(author, subject string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <user@remote.example>\r\nSubject: %s\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%s@lab.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody of %s\r\n", author, subject, subject, subject)
}

// sendRaw sends one message from the sandbox's good client.
func sendRaw(t *testing.T, addr, envelope, message string) error {
	t.Helper()
	c := dialSMTP(t, addr, "127.0.3.1", "mail.good.test")
	defer c.Close()
	if err := deliver(c, envelope, message); err != nil {
		return err
	}
	return c.Quit()
}

// headerLine is the value of the first field named name in a message.
func headerLine(data, name string) string {
	for _, line := range strings.Split(data, "\r\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return v
		}
	}
	return ""
}
