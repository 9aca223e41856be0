package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/smtptest"
)

func TestDMARCAlignment(t *testing.T) {
	r := newMessageRig(t)
	r.author("align.test", "v=DMARC1; p=reject")
	r.author("strict.test", "v=DMARC1; p=quarantine; adkim=s; aspf=s")
	r.author("other.test", "v=DMARC1; p=none")
	r.z.TXT("nospf.test", "v=spf1 -all").TXT("_dmarc.nospf.test", "v=DMARC1; p=reject")
	r.author("nodmarc.test", "")
	r.z.TXT("_dmarc.broken.test", "v=DMARC1; p=reject").SetFault("_dmarc.broken.test", smtptest.ServFail)
	align := r.publish(t, "align.test", "s1", 2048, "")
	sub := r.publish(t, "mail.align.test", "s1", 2048, "")
	strictSub := r.publish(t, "mail.strict.test", "s1", 2048, "")
	other := r.publish(t, "other.test", "s1", 2048, "")
	nospf := r.publish(t, "nospf.test", "s1", 2048, "")
	r.author("tempkey.test", "v=DMARC1; p=reject")
	down := r.publish(t, "tempkey.test", "down", 2048, "")
	r.z.SetFault(down.KeyName(), smtptest.ServFail)
	r.author("spfdown.test", "v=DMARC1; p=reject")
	r.z.SetTypeFault("spfdown.test", dns.TypeTXT, smtptest.ServFail)
	cases := []struct {
		name, sender, message string
		status                Status
		detail, fix           string
	}{
		{"DKIM and SPF aligned", "a@align.test", align.sign(t, plainMessage("a@align.test")), StatusPass, "DKIM (d=align.test s=s1) and SPF (align.test) align", ""},
		{"relaxed: a sub-domain signs", "a@align.test", sub.sign(t, plainMessage("a@align.test")), StatusPass, "DKIM (d=mail.align.test s=s1) and SPF", ""},
		{"unsigned, envelope another domain", "bounce@other.test", plainMessage("a@align.test"), StatusFail,
			"DMARC fails for align.test: no DKIM signature verifies; SPF passes for the envelope domain other.test, which does not align with align.test (aspf=r). align.test publishes p=reject (_dmarc.align.test): receivers refuse the message (Gmail 550 5.7.26",
			"Sign with d=align.test (OpenDKIM SigningTable), or make the envelope sender @align.test"},
		{"signed by another d=", "bounce@other.test", other.sign(t, plainMessage("a@align.test")), StatusFail, "no verifying DKIM signature has d= aligned with align.test", "Sign with d=align.test"},
		{"strict: a sub-domain signs", "a@strict.test", strictSub.sign(t, plainMessage("a@strict.test")), StatusPass, "SPF (strict.test) aligns with strict.test; DKIM verifies but for a domain that does not align", ""},
		{"DKIM alone, SPF fails", "a@nospf.test", nospf.sign(t, plainMessage("a@nospf.test")), StatusWarn, "DMARC passes through DKIM (d=nospf.test s=s1) alone: SPF of the envelope domain nospf.test does not pass", "spf.relay"},
		{"SPF alone, unsigned", "a@align.test", plainMessage("a@align.test"), StatusWarn, "DMARC passes through SPF (align.test) alone: no DKIM signature verifies", "Sign with d=align.test"},
		{"no DMARC record", "bounce@other.test", plainMessage("a@nodmarc.test"), StatusFail, "nodmarc.test publishes no DMARC policy (asked _dmarc.nodmarc.test, _dmarc.test)", ""},
		{"two From addresses", "a@align.test", align.sign(t, plainMessage("a@align.test, b@other.test")), StatusFail, "the From field has 2 addresses", "one From field"},
		{"two From fields", "a@align.test", align.sign(t, plainMessage("a@align.test", "From: b@other.test")), StatusFail, "the message has 2 From fields", ""},
		{"From does not parse", "a@align.test", plainMessage("<<<a@align.test"), StatusFail, "the From field does not parse", ""},
		{"From with the root dot", "a@align.test", align.sign(t, plainMessage("<a@align.test.>")), StatusPass, "DKIM (d=align.test s=s1) and SPF", ""},
		{"From without a domain", "a@align.test", plainMessage("undisclosed-recipients:;"), StatusFail, "the From field has 0 addresses", ""},
		{"no From field", "a@align.test", "Subject: x\r\n\r\nbody\r\n", StatusSkip, "no From field", ""},
		{"DMARC record SERVFAIL", "a@align.test", plainMessage("a@broken.test"), StatusTempError, "_dmarc.broken.test", ""},
		// A temporary error is never a fail: the half it hides may align.
		{"key lookup SERVFAIL, envelope another domain", "bounce@other.test", down.sign(t, plainMessage("a@tempkey.test")), StatusTempError,
			"DMARC alignment for tempkey.test could not be judged: DKIM: d=tempkey.test s=down: key unavailable", ""},
		{"SPF SERVFAIL, unsigned", "a@spfdown.test", plainMessage("a@spfdown.test"), StatusTempError, "spf.relay=temperror", ""},
		{"SPF SERVFAIL, signed and aligned", "a@spfdown.test", r.publish(t, "spfdown.test", "s1", 1024, "").sign(t, plainMessage("a@spfdown.test")), StatusPass, "SPF is not judged", ""},
		{"key lookup SERVFAIL, SPF aligned", "a@tempkey.test", down.sign(t, plainMessage("a@tempkey.test")), StatusPass, "DKIM could not be verified here", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.check(t, c.sender, c.message).Check(DMARCAlignment)
			if got.Status != c.status || !strings.Contains(got.Detail, c.detail) || !strings.Contains(got.Fix(), c.fix) {
				t.Errorf("%s: %s (fix %q)\nwant %s containing %q (fix %q)", got.Status, got.Detail, got.Fix(), c.status, c.detail, c.fix)
			}
		})
	}
}

// With no single outbound address, SPF cannot be judged: DKIM decides
// alone, and the missing SPF half is no warning.
func TestDMARCAlignmentWithoutOutboundAddress(t *testing.T) {
	r := newMessageRig(t)
	cfg := r.e.cfg
	cfg.OutboundIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	r.author("alone.test", "v=DMARC1; p=reject")
	s := r.publish(t, "alone.test", "s1", 1024, "")
	for _, c := range []struct {
		message string
		status  Status
	}{{s.sign(t, plainMessage("a@alone.test")), StatusPass}, {plainMessage("a@alone.test"), StatusFail}} {
		got := r.check(t, "a@alone.test", c.message).Check(DMARCAlignment)
		if got.Status != c.status || !strings.Contains(got.Detail, "outbound.ips holds no single address") {
			t.Errorf("%s: %s, want %s saying SPF is not judged", got.Status, got.Detail, c.status)
		}
	}
}

// An allow-listed author domain is not judged; the envelope's allow-list
// or client allow-list does not hide the message checks.
func TestMessageChecksFollowTheAuthorsAllowList(t *testing.T) {
	r := newMessageRig(t)
	r.e.cfg.Policy.AllowDomains = []string{"trusted.test"}
	rep := r.check(t, "a@trusted.test", plainMessage("a@trusted.test"))
	if got := rep.Check(DMARCAlignment); got.Status != StatusSkip || !strings.Contains(got.Detail, "allow-listed") {
		t.Errorf("%s: %s", got.Status, got.Detail)
	}
	rep = r.check(t, "a@trusted.test", plainMessage("a@other.test"))
	if got := rep.Check(DKIMSignature); got.Status != StatusFail {
		t.Errorf("dkim.signature of another author: %s: %s", got.Status, got.Detail)
	}
	if rep.Verdict() != Flag {
		t.Errorf("verdict %s, want flag: the author is not allow-listed", rep.Verdict())
	}
}
