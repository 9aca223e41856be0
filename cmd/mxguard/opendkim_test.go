package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/mtalab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/smtptest"
)

// startOpenDKIM starts Debian's opendkim signing domain's mail, or fails
// under CI and skips elsewhere when it is not installed.
func startOpenDKIM(t *testing.T, domain string) *mtalab.OpenDKIM {
	t.Helper()
	if err := mtalab.OpenDKIMAvailable(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it (.ci/run)", err)
		}
		t.Skip(err)
	}
	o, err := mtalab.StartOpenDKIM(domain, "lab", 2048)
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

// publishKey puts a DKIM key record in the zone, in strings of at most
// 255 octets (RFC 1035 section 3.3.14).
func publishKey(z *smtptest.Zone, name, record string) {
	txt := &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: smtptest.DefaultTTL}}
	for len(record) > 255 {
		txt.Txt, record = append(txt.Txt, record[:255]), record[255:]
	}
	txt.Txt = append(txt.Txt, record)
	z.AddRR(txt)
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
	signer := startOpenDKIM(t, "signed.test")
	rig := startSignedRig(t, mta, signer.Socket, "")
	rig.sb.Zone.MX("signed.test", 10, "mx.accept.test")
	spectest.Authenticated(rig.sb.Zone, "signed.test")
	publishKey(rig.sb.Zone, "lab._domainkey.signed.test", signer.Record)

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
