package policy

import (
	"context"
	"fmt"
)

// HELOSyntax is the check of the HELO/EHLO argument's syntax.
const HELOSyntax CheckID = "helo.syntax"

var heloSyntax = check{
	id:       HELOSyntax,
	chain:    chainDNS,
	what:     "HELO is an FQDN, or an address literal `[ip]` equal to the client IP",
	failWhen: "bare IP, single label, bad syntax, literal not the client IP",
	rfc:      "RFC 5321 sections 4.1.1.1, 4.1.3, 2.3.5",
	action:   Flag,
	fix:      "Configure the sending MTA to greet with its fully qualified host name (e.g. Postfix smtp_helo_name, Sendmail confDOMAIN_NAME), ideally the name its IP's PTR points to.",
	gate:     sendingHost,
	run:      checkHELOSyntax,
}

func checkHELOSyntax(_ context.Context, ev *evaluation) Result {
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
