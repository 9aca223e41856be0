package postfixpolicy

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/mxguard/mxguard/internal/testkit"
)

// BenchmarkRequest is one warm RCPT request and its answer over loopback,
// from several connections at once as Postfix's smtpd processes ask.
func BenchmarkRequest(b *testing.B) { requests(b) }

// TestBenchmarkRequest is BenchmarkRequest's quick run.
func TestBenchmarkRequest(t *testing.T) { requests(t) }

func requests(tb testing.TB) {
	r := newRig(tb, nil)
	var n atomic.Int64
	testkit.IterateParallel(tb, func(next func() bool) {
		c := r.dial(tb)
		for next() {
			// Every check passes: a flag would measure another path.
			got, err := c.ask(rcpt("a@ok.test", fmt.Sprint(n.Add(1)), "u@remote.example")...)
			if err != nil || got != "PREPEND X-MXGuard: pass; domain=ok.test; ip=127.0.3.1" {
				tb.Errorf("%q %v", got, err)
				return
			}
		}
	})
}
