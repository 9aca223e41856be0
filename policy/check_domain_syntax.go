package policy

import "context"

// DomainSyntax is the check that the sender domain is a DNS host name.
const DomainSyntax CheckID = "domain.syntax"

var domainSyntax = check{
	id:          DomainSyntax,
	chain:       chainMX,
	aboutDomain: true,
	what:        "the sender domain is a DNS host name (LDH labels, at most 253 octets, IDN converted to A-labels; no address literal, no bare IP). A plain label such as `mx--01` is valid; only labels starting `xn--` must be valid A-labels",
	failWhen:    "invalid",
	rfc:         "RFC 1035 section 2.3.1, RFC 1123 section 2.1, RFC 5891",
	action:      Reject,
	fix:         "Send with an envelope sender whose domain is a registered host name (letters, digits, '-'; no address literals).",
	gate: func(_ context.Context, ev *evaluation) string {
		if ev.sender.Null || ev.sender.Unqualified || ev.self {
			return ev.domainSkip()
		}
		return ""
	},
	run: func(_ context.Context, ev *evaluation) Result {
		if ev.sender.Err != nil {
			return Result{Status: StatusFail, Detail: ev.sender.Err.Error(), Host: ev.sender.Domain}
		}
		return Result{Status: StatusPass, Detail: ev.sender.Domain + " is a valid host name", Host: ev.sender.Domain}
	},
}
