package policy

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/smtptest"
)

func TestBulkUnsubscribe(t *testing.T) {
	r := newMessageRig(t)
	r.e.cfg.Message.BulkHeaders = []string{"X-Campaign-Id"}
	r.author("news.test", "v=DMARC1; p=reject")
	news := r.publish(t, "news.test", "s1", 2048, "")
	other := r.publish(t, "esp.test", "s1", 2048, "")
	down := r.publish(t, "news.test", "down", 2048, "")
	r.z.SetFault(down.KeyName(), smtptest.ServFail)
	oneClick := []string{"List-Unsubscribe: <https://news.test/u/1>, <mailto:u@news.test>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click"}
	covering := []string{"From", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post"}
	cases := []struct {
		name, message string
		status        Status
		detail        string
	}{
		{"not bulk", news.sign(t, plainMessage("a@news.test")), StatusSkip, "not bulk mail"},
		{"one-click, signed", news.sign(t, plainMessage("a@news.test", oneClick...), covering...), StatusPass, "bulk mail (List-Unsubscribe) offers one-click unsubscribe"},
		{"no Post field", news.sign(t, plainMessage("a@news.test", oneClick[0]), covering...), StatusFail, "it lacks List-Unsubscribe-Post: List-Unsubscribe=One-Click"},
		{"mailto only", news.sign(t, plainMessage("a@news.test", "List-Unsubscribe: <mailto:u@news.test>", oneClick[1]), covering...), StatusFail, "an https: URI"},
		{"fields not signed", news.sign(t, plainMessage("a@news.test", oneClick...), "From", "To", "Subject"), StatusFail, "whose h= covers both fields"},
		{"signed by an unaligned domain", other.sign(t, plainMessage("a@news.test", oneClick...), covering...), StatusFail, "aligned with news.test"},
		{"Precedence: bulk", news.sign(t, plainMessage("a@news.test", "Precedence: bulk")), StatusFail, "bulk mail (Precedence: bulk)"},
		{"List-Id", news.sign(t, plainMessage("a@news.test", "List-Id: <news.news.test>")), StatusFail, "bulk mail (List-Id)"},
		{"checks.bulk_headers", news.sign(t, plainMessage("a@news.test", "X-Campaign-Id: 7")), StatusFail, "bulk mail (X-Campaign-Id)"},
		{"the signature's key SERVFAIL", down.sign(t, plainMessage("a@news.test", oneClick...), covering...), StatusTempError, "could not be verified here"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.check(t, "a@news.test", c.message).Check(BulkUnsubscribe)
			if got.Status != c.status || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("%s: %s, want %s containing %q", got.Status, got.Detail, c.status, c.detail)
			}
		})
	}
}
