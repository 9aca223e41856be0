package policy

import "context"

// domain.syntax: the sender domain is a DNS host name (RFC 1035 section 2.3.1,
// RFC 1123 section 2.1; IDN per RFC 5891), not an address literal.

const fixDomainSyntax = "Send with an envelope sender whose domain is a registered host name (letters, digits, '-'; no address literals)."

func checkDomainSyntax(_ context.Context, ev *evaluation) Result {
	switch {
	case ev.sender.Null || ev.sender.Unqualified:
		return skip(ev.domainSkip())
	case ev.sender.Err != nil:
		return Result{Status: StatusFail, Detail: ev.sender.Err.Error(), Host: ev.sender.Domain}
	}
	return Result{Status: StatusPass, Detail: ev.sender.Domain + " is a valid host name", Host: ev.sender.Domain}
}
