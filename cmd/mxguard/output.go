package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mxguard/mxguard/policy"
)

// writeHuman prints a report as a table: check, status, host, IP, detail,
// then the reply an MTA would give and what the owner should fix. headline
// is the word that goes with the exit code (see outcome).
func writeHuman(w io.Writer, r *policy.Report, headline string) {
	subject := clean(r.Domain)
	if r.Null {
		subject = "<> (null sender)"
	}
	fmt.Fprintf(w, "%s: %s", subject, headline)
	if v := strings.ToUpper(r.Verdict().String()); v != headline && r.Decision.ByTempError {
		fmt.Fprintf(w, "  (serve would %s: policy.on_temperror is %s)", r.Verdict(), r.Verdict())
	}
	if r.ReportOnly {
		fmt.Fprint(w, "  (policy.mode: report: serve would only add the header)")
	}
	if r.ClientIP.IsValid() {
		fmt.Fprintf(w, "  client %s", r.ClientIP)
	}
	fmt.Fprintf(w, "  (%d ms)\n", r.Elapsed.Milliseconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CHECK\tSTATUS\tHOST\tIP\tDETAIL")
	for _, c := range r.Checks {
		ip := ""
		if c.IP.IsValid() {
			ip = c.IP.String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", clean(string(c.ID)), c.Status, dash(clean(c.Host)), dash(ip), clean(c.Detail))
	}
	tw.Flush()
	if reply, ok := r.Reply(); ok {
		fmt.Fprintf(w, "  MTA reply: %s\n", clean(reply.String()))
	} else if r.Verdict() != policy.Pass || r.Decision.TempError {
		fmt.Fprintf(w, "  header: %s\n", clean(r.HeaderValue()))
	}
	var fixes []string
	for _, c := range r.Checks {
		if fix := c.Fix(); fix != "" {
			fixes = append(fixes, fmt.Sprintf("  - %s (%s): %s", clean(string(c.ID)), c.Status, clean(fix)))
		}
	}
	if len(fixes) > 0 {
		fmt.Fprintln(w, "  What to fix:")
		fmt.Fprintln(w, strings.Join(fixes, "\n"))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// plain spells the typography of check texts in ASCII.
var plain = strings.NewReplacer("\u00a7", "section ", "\u2026", "...", "\u2014", "--", "\u2013", "-",
	"\u2192", "->", "\u2265", ">=", "\u2264", "<=", "\u201c", `"`, "\u201d", `"`, "\u2018", "'", "\u2019", "'",
	"\u00a0", " ")

// clean makes one field of a report safe for a terminal and a table: ASCII
// only, no control characters (a PTR name or an SMTP greeting is whatever a
// stranger put there). Other characters are written as escapes.
func clean(s string) string {
	s = plain.Replace(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < ' ' || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= utf8.RuneSelf:
			writeUnicodeEscape(&b, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// writeUnicodeEscape writes r as JSON does, \uXXXX, with a surrogate pair
// beyond the BMP, so that escaped JSON output stays valid JSON.
func writeUnicodeEscape(b *strings.Builder, r rune) {
	if r > 0xffff {
		r1, r2 := utf16.EncodeRune(r)
		fmt.Fprintf(b, `\u%04x\u%04x`, r1, r2)
		return
	}
	fmt.Fprintf(b, `\u%04x`, r)
}

// asciiWriter passes ASCII text through and escapes the rest: a character
// as \uXXXX (which keeps JSON lines valid JSON with the same values), a
// stray byte or a control character other than tab, CR and newline as \xNN.
// The commands print through it, so whatever a message quotes (a file
// name, a value from a configuration file, a flag), the output is ASCII.
type asciiWriter struct{ w io.Writer }

func (a asciiWriter) Write(p []byte) (int, error) {
	ascii := true
	for _, c := range p {
		if c >= utf8.RuneSelf || c < ' ' && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			ascii = false
			break
		}
	}
	if ascii {
		return a.w.Write(p)
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < ' ' && r != '\t' && r != '\r' && r != '\n', r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, p[i])
		case r >= utf8.RuneSelf:
			writeUnicodeEscape(&b, r)
		default:
			b.WriteByte(p[i])
		}
		i += size
	}
	if _, err := io.WriteString(a.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// unwrap returns the writer under an asciiWriter.
func unwrap(w io.Writer) io.Writer {
	if a, ok := w.(asciiWriter); ok {
		return a.w
	}
	return w
}
