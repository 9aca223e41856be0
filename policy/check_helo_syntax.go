package policy

import (
	"context"
	"fmt"
)

// helo.syntax: the HELO/EHLO argument is an FQDN or an address literal of
// the client IP (RFC 5321 section 4.1.1.1, section 4.1.3, section 2.3.5).

const fixHELOSyntax = "Configure the sending MTA to greet with its fully qualified host name (e.g. Postfix smtp_helo_name, Sendmail confDOMAIN_NAME), ideally the name its IP's PTR points to."

func checkHELOSyntax(_ context.Context, ev *evaluation) Result {
	if ev.identitySkip != "" {
		return skip(ev.identitySkip)
	}
	if ev.heloRaw == "" {
		return skip("no HELO/EHLO name given")
	}
	h, err := ParseHELO(ev.heloRaw)
	switch {
	case err != nil:
		return Result{Status: StatusFail, Host: Printable(ev.heloRaw, 80), IP: ev.client, Detail: "HELO " + err.Error()}
	case h.Literal.IsValid() && h.Literal != ev.client:
		return Result{Status: StatusFail, Host: ev.heloRaw, IP: ev.client,
			Detail: fmt.Sprintf("HELO address literal %s is not the client address %s", ev.heloRaw, ev.client)}
	case h.Literal.IsValid():
		return Result{Status: StatusPass, Host: ev.heloRaw, IP: ev.client, Detail: "HELO is the client's address literal"}
	}
	return Result{Status: StatusPass, Host: h.Name, IP: ev.client, Detail: h.Name + " is a fully qualified domain name"}
}
