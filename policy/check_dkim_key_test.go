// Old signers still publish 512-bit keys: the test makes one.
//go:debug rsa1024min=0

package policy

import (
	"strings"
	"testing"
)

func TestDKIMKey(t *testing.T) {
	r := newMessageRig(t)
	r.author("key.test", "v=DMARC1; p=reject")
	msg := plainMessage("a@key.test")
	cases := []struct {
		name   string
		signer signer
		status Status
		detail string
	}{
		{"RSA 2048", r.publish(t, "key.test", "rsa2048", 2048, ""), StatusPass, "RSA 2048 bits"},
		{"RSA 1024", r.publish(t, "key.test", "rsa1024", 1024, ""), StatusWarn, "RSA key of 1024 bits"},
		{"RSA 512", r.publish(t, "key.test", "rsa512", 512, ""), StatusFail, "RSA key of 512 bits: receivers treat a key below 1024 bits as no signature"},
		{"ed25519", r.publish(t, "key.test", "ed", 0, ""), StatusPass, "ed25519"},
		{"not DKIM1", r.publish(t, "key.test", "v2", 2048, "v=DKIM2; p=AAAA"), StatusFail, "v=DKIM2, not v=DKIM1"},
		{"garbage key", r.publish(t, "key.test", "junk", 2048, "v=DKIM1; p=!!!not base64"), StatusSkip, "no signature with a published key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.check(t, "a@key.test", c.signer.sign(t, msg)).Check(DKIMKey)
			if got.Status != c.status || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("%s: %s, want %s containing %q", got.Status, got.Detail, c.status, c.detail)
			}
		})
	}
	t.Run("a broken signature's key is not judged", func(t *testing.T) {
		s := r.publish(t, "key.test", "broken", 1024, "")
		changed := strings.Replace(s.sign(t, msg), "Hello.", "Hello, changed.", 1)
		if got := r.check(t, "a@key.test", changed).Check(DKIMKey); got.Status != StatusSkip {
			t.Errorf("%s: %s", got.Status, got.Detail)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		if got := r.check(t, "a@key.test", msg).Check(DKIMKey); got.Status != StatusSkip {
			t.Errorf("%s: %s", got.Status, got.Detail)
		}
	})
}
