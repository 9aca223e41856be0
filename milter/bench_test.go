package milter_test

import (
	"testing"

	"github.com/mxguard/mxguard/smtptest"
)

// BenchmarkTransaction plays whole milter transactions (connect, HELO, MAIL,
// RCPT, headers, body, end of message) for a warm-cache sender over loopback.
func BenchmarkTransaction(b *testing.B) {
	h := newHarness(b, nil)
	conn := goodConn(message("a@ok.test"))
	if _, err := smtptest.PlayMilter("tcp", h.addr, conn); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := smtptest.PlayMilter("tcp", h.addr, conn)
			if err != nil || !res[0].Accepted() {
				b.Errorf("%v %+v", err, res)
				return
			}
		}
	})
}
