package milter_test

import (
	"testing"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

// BenchmarkTransaction plays whole milter transactions (connect, HELO, MAIL,
// RCPT, headers, body, end of message) for a warm-cache sender over loopback.
func BenchmarkTransaction(b *testing.B) { transactions(b) }

// TestBenchmarkTransaction is BenchmarkTransaction's quick run.
func TestBenchmarkTransaction(t *testing.T) { transactions(t) }

func transactions(tb testing.TB) {
	h := newHarness(tb, nil)
	conn := goodConn(message("a@ok.test"))
	check := func(res []smtptest.MilterResult, err error) bool {
		if err != nil {
			tb.Error(err)
			return false
		}
		// Every check passes: a flag would measure another path.
		if v, _ := res[0].Header("X-MXGuard"); !res[0].Accepted() || v != "pass; domain=ok.test; ip=127.0.3.1" {
			tb.Errorf("%+v", res[0])
			return false
		}
		return true
	}
	if !check(smtptest.PlayMilter("tcp", h.addr, conn)) {
		return
	}
	testkit.IterateParallel(tb, func(next func() bool) {
		for next() && check(smtptest.PlayMilter("tcp", h.addr, conn)) {
		}
	})
}
