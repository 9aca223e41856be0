package postfixpolicy

import (
	"bufio"
	"strings"
	"testing"
)

// FuzzReadRequest feeds the request parser anything a client could send: it
// must return attributes or an error, never panic, and never accept more
// than its bounds.
func FuzzReadRequest(f *testing.F) {
	f.Add("request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n\n")
	f.Add("a=b\r\n\r\n")
	f.Add("=\n\n")
	f.Add("novalue\n\n")
	f.Add(strings.Repeat("x", 5000) + "=y\n\n")
	f.Add("a=b\nc=d")
	f.Fuzz(func(t *testing.T, in string) {
		attrs, err := readRequest(bufio.NewReaderSize(strings.NewReader(in), maxLine))
		if err != nil {
			return
		}
		if len(attrs) > maxAttributes {
			t.Fatalf("%d attributes", len(attrs))
		}
		for k, v := range attrs {
			if k == "" || strings.ContainsAny(k+v, "\n") || len(k)+len(v) > maxLine {
				t.Fatalf("attribute %q=%q", k, v)
			}
		}
	})
}
