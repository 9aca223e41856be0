package milter_test

import (
	"testing"

	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
)

// domain.blocklist in the header: a listing flags, a refused query is a
// temperror that lets the mail through, for the envelope sender and for
// the From domain alike.
func TestHeaderNamesBlocklistFindings(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) { o.HeaderFrom = true })
	for _, c := range []struct{ sender, from, want string }{
		{"a@dbl-listed.test", "a@dbl-listed.test", "flag; domain=dbl-listed.test; ip=127.0.3.1; domain.blocklist=fail"},
		{"a@ok.test", "a@mail.dbl-listed.test", "flag; domain=ok.test; ip=127.0.3.1; from=mail.dbl-listed.test; domain.blocklist=fail"},
		{"a@dbl-refused.test", "a@ok.test", "pass; domain=dbl-refused.test; ip=127.0.3.1; domain.blocklist=temperror; from=ok.test"},
		{"a@ok.test", "a@dbl-other.test", "pass; domain=ok.test; ip=127.0.3.1; from=dbl-other.test"},
	} {
		msg := message(c.sender)
		msg.Headers[0][1] = c.from
		r := h.play(t, goodConn(msg))[0]
		if got, _ := r.Header("X-MXGuard"); !r.Accepted() || got != c.want {
			t.Errorf("%s, From %s: accepted %v, header\n got %q\nwant %q", c.sender, c.from, r.Accepted(), got, c.want)
		}
	}
}
