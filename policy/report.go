package policy

import (
	"cmp"
	"fmt"
	"strings"
)

// HeaderValue formats the X-MXGuard header: the verdict, domain= and ip=,
// then every finding (warn, fail, temperror) as id=status, e.g.
// "flag; domain=example.com; ip=192.0.2.7; mx.port25=fail; helo.matches-ptr=warn".
func (r *Report) HeaderValue() string {
	return Header(r.Verdict().String(), r)
}

// TempErrorHeaderValue is the header of a decision that could not be made
// (internal error or decision_timeout): the mail is accepted and says so.
func (r *Report) TempErrorHeaderValue() string {
	return Header("temperror", r)
}

// Header formats the header of a message judged on several reports: the
// verdict word ("mode=report" after it under policy.mode: report), the
// envelope report as in HeaderValue, then each further report (a From
// header domain) as "from=DOMAIN" followed by its own domain findings.
func Header(verdict string, envelope *Report, from ...*Report) string {
	var b strings.Builder
	b.WriteString(verdict)
	if envelope.ReportOnly {
		b.WriteString("; mode=report")
	}
	b.WriteString("; domain=")
	envelope.writeDomain(&b)
	if envelope.ClientIP.IsValid() {
		b.WriteString("; ip=")
		b.WriteString(envelope.ClientIP.String())
	}
	envelope.writeFindings(&b, false)
	for _, r := range from {
		b.WriteString("; from=")
		r.writeDomain(&b)
		r.writeFindings(&b, true)
	}
	return b.String()
}

func (r *Report) writeDomain(b *strings.Builder) {
	if r.Null {
		b.WriteString("<>")
	} else {
		b.WriteString(headerSafe(r.Domain))
	}
}

func (r *Report) writeFindings(b *strings.Builder, domainOnly bool) {
	for _, c := range r.Checks {
		if domainOnly && !c.ID.AboutDomain() {
			continue // the sending host is the envelope's, already listed
		}
		if c.Finding() {
			fmt.Fprintf(b, "; %s=%s", c.ID, c.Status)
		}
	}
}

// Findings lists every check that warned, failed or could not finish, as
// id=status, for logs.
func (r *Report) Findings() string {
	var b strings.Builder
	r.writeFindings(&b, false)
	return strings.ReplaceAll(strings.TrimPrefix(b.String(), "; "), "; ", " ")
}

// HoldReason is the quarantine reason of a hold: the domain, and the check
// that caused it.
func (r *Report) HoldReason() string {
	c, _ := r.Cause()
	return Printable(fmt.Sprintf("mxguard: %s: %s %s: %s", r.Domain, c.ID, c.Status, c.Detail), 400)
}

// headerSafe keeps a (possibly invalid) domain from breaking the header.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == ';' || r >= 0x7f {
			return '?'
		}
		return r
	}, Printable(s, 255))
}

// The SMTP replies of mxguard's refusals (RFC 5321 reply codes, RFC 3463
// enhanced status codes: class.subject.detail).
const (
	CodeDefer  = 451 // class 4: try again later
	CodeReject = 550 // class 5: do not
	// subjectDefault is the subject.detail of a refusal for policy reasons
	// (7.1, "delivery not authorized"), unless the check names another;
	// subjectTempError (4.3, "directory server failure") is a deferral by
	// policy.on_temperror.
	subjectDefault   = "7.1"
	subjectTempError = "4.3"
)

// Reply is an SMTP reply for a defer or reject verdict.
type Reply struct {
	Code     int    // CodeDefer or CodeReject
	Enhanced string // RFC 3463 code, e.g. "4.7.1"
	Text     string // one line: domain, check, host, and what to fix
}

func (r Reply) String() string { return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text) }

// maxReplyText keeps replies inside RFC 5321's 512-octet reply line.
const maxReplyText = 400

// Reply returns the SMTP reply for a defer or reject verdict (ok is false
// for other verdicts). Null MX replies use x.7.27 (RFC 7505), PTR/FCrDNS
// x.7.25 (RFC 7372), and a deferral by on_temperror 451 4.4.3.
func (r *Report) Reply() (reply Reply, ok bool) {
	return r.ReplyAs(r.Verdict())
}

// ReplyAs is the reply the report's cause gets when answered with verdict
// v (Defer or Reject) rather than its own; a front end that cannot defer,
// such as one for locally submitted mail, uses it to reject instead.
func (r *Report) ReplyAs(v Verdict) (reply Reply, ok bool) {
	cause, found := r.Cause()
	if v < Defer || !found {
		return Reply{}, false
	}
	class, code := "4", CodeDefer
	if v == Reject {
		class, code = "5", CodeReject
	}
	subject := cmp.Or(cause.Enhanced, subjectDefault)
	if r.Decision.ByTempError {
		subject = subjectTempError
	}
	var b strings.Builder
	domain := r.Domain
	if r.Null {
		domain = "<>"
	}
	fmt.Fprintf(&b, "%s: %s %s: %s", domain, cause.ID, cause.Status, cause.Detail)
	if r.Decision.ByTempError {
		b.WriteString("; try again later")
	} else if fix := cause.Fix(); fix != "" {
		b.WriteString(". Fix: ")
		b.WriteString(fix)
	}
	text := strings.Map(func(r rune) rune {
		if r < ' ' || r >= 0x7f {
			return '?' // replies are ASCII, one line
		}
		return r
	}, b.String())
	if len(text) > maxReplyText {
		text = text[:maxReplyText-3] + "..."
	}
	return Reply{Code: code, Enhanced: class + "." + subject, Text: text}, true
}
