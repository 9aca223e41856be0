package policy

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/smtptest"
)

func TestDKIMSignature(t *testing.T) {
	r := newMessageRig(t)
	r.author("sig.test", "v=DMARC1; p=reject")
	good := r.publish(t, "sig.test", "good", 2048, "")
	unpublished := newSigner(t, "sig.test", "gone", 2048)
	revoked := r.publish(t, "sig.test", "old", 2048, "v=DKIM1; k=rsa; p=")
	failing := r.publish(t, "sig.test", "down", 2048, "")
	r.z.SetFault("down._domainkey.sig.test", smtptest.ServFail)
	msg := plainMessage("a@sig.test")
	changed := strings.Replace(good.sign(t, msg), "Hello.", "Hello, changed after signing.", 1)
	many := msg
	for range maxSignatures + 4 {
		many = good.sign(t, many)
	}
	cases := []struct {
		name, message string
		status        Status
		detail, fix   string
	}{
		{"signed, verifies", good.sign(t, msg), StatusPass, "verifies: d=sig.test s=good", ""},
		{"unsigned", msg, StatusFail, "carries no DKIM signature", "Sign outgoing mail"},
		{"key not published", unpublished.sign(t, msg), StatusFail, "d=sig.test s=gone: no key for signature", "Publish the signer's key at gone._domainkey.sig.test"},
		{"key revoked", revoked.sign(t, msg), StatusFail, "key revoked", "revoked (empty p=)"},
		{"changed after signing", changed, StatusFail, "body hash did not verify", "changed after it was signed"},
		{"one good, one broken", good.sign(t, unpublished.sign(t, msg)), StatusWarn, "d=sig.test s=good verifies, but not d=sig.test s=gone", ""},
		{"key lookup SERVFAIL", failing.sign(t, msg), StatusTempError, "key unavailable", ""},
		{"malformed signature", "DKIM-Signature: v=1; a=rsa-sha256; d=sig.test; garbage\r\n" + msg, StatusFail, "malformed signature tags", ""},
		{"binary in the signature", "DKIM-Signature: v=1; d=\x00\xff; s=\x01\r\n" + msg, StatusFail, "no DKIM signature verifies", ""},
		{"more signatures than verified", many, StatusPass, "the first 8 signatures verified", ""},
		// A d= no query can carry has no key, for good: not a DNS error.
		{"a d= DNS cannot carry", strings.Replace(unpublished.sign(t, msg), "d=sig.test", "d="+strings.Repeat("x", 70)+".test", 1), StatusFail, "no key for signature", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.check(t, "a@sig.test", c.message).Check(DKIMSignature)
			if got.Status != c.status || !strings.Contains(got.Detail, c.detail) || !strings.Contains(got.Fix(), c.fix) {
				t.Errorf("%s: %s (fix %q), want %s containing %q (fix %q)", got.Status, got.Detail, got.Fix(), c.status, c.detail, c.fix)
			}
			if got.Detail != Printable(got.Detail, 4096) {
				t.Errorf("detail is not printable: %q", got.Detail)
			}
		})
	}
}
