package policy

import (
	"context"
	"fmt"
	"slices"
)

// HELOMatchesPTR is the check that the HELO name is a confirmed PTR name.
const HELOMatchesPTR CheckID = "helo.matches-ptr"

// RFC 5321 section 4.1.4 forbids refusing mail for a mismatch alone, so it
// only ever warns.
var heloMatchesPTR = check{
	id:       HELOMatchesPTR,
	chain:    chainDNS,
	what:     "HELO equals a forward-confirmed PTR name",
	warnWhen: "mismatch (RFC 5321 section 4.1.4: never more than a flag)",
	rfc:      "RFC 5321 section 4.1.4",
	action:   Flag,
	fix:      "Make the sending MTA's HELO name the same as the forward-confirmed PTR name of its IP (or change the PTR to match the HELO name).",
	gate:     sendingHost,
	run:      checkHELOMatchesPTR,
}

func checkHELOMatchesPTR(ctx context.Context, ev *evaluation) Result {
	h, err := ParseHELO(ev.heloRaw)
	if ev.heloRaw == "" || err != nil {
		return skip("no valid HELO name to compare")
	}
	// Only mxguard's own lookups count, as for client.ptr and client.fcrdns:
	// an MTA's client name may come from /etc/hosts, which receivers never see.
	names := ev.forwardConfirmed(ctx).confirmed
	switch {
	case len(names) == 0:
		return skip("no forward-confirmed PTR name to compare")
	case h.Literal.IsValid():
		return Result{Status: StatusWarn, Host: ev.heloRaw, IP: ev.client,
			Detail: fmt.Sprintf("HELO is an address literal, not the PTR name %s", names[0])}
	case slices.Contains(names, h.Name):
		return Result{Status: StatusPass, Host: h.Name, IP: ev.client, Detail: "HELO matches the forward-confirmed PTR name"}
	}
	return Result{Status: StatusWarn, Host: h.Name, IP: ev.client,
		Detail: fmt.Sprintf("HELO %s is not the forward-confirmed PTR name %s", h.Name, names[0])}
}
