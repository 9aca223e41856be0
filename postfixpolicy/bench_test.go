package postfixpolicy

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkRequest is one warm RCPT request and its answer over loopback,
// from several connections at once as Postfix's smtpd processes ask.
func BenchmarkRequest(b *testing.B) {
	r := newRig(b, nil)
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := r.dial(b)
		for pb.Next() {
			got, err := c.ask(rcpt("a@ok.test", fmt.Sprint(n.Add(1)), "u@remote.example")...)
			if err != nil || !strings.HasPrefix(got, "PREPEND") {
				b.Errorf("%q %v", got, err)
				return
			}
		}
	})
}
