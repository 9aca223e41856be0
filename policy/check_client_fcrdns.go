package policy

import (
	"context"
	"fmt"
	"strings"
)

// ClientFCrDNS is the check of forward-confirmed reverse DNS.
const ClientFCrDNS CheckID = "client.fcrdns"

// The forward lookup is A for an IPv4 client and AAAA for IPv6.
var clientFCrDNS = check{
	id:       ClientFCrDNS,
	chain:    chainDNS,
	what:     "some PTR name resolves (A or AAAA) back to the client IP",
	failWhen: "none does",
	rfc:      "RFC 1912 section 2.1, RFC 7372",
	action:   Flag,
	enhanced: "7.25",
	fix:      "Make the PTR name of the sending IP resolve back to that IP: add the matching A (IPv4) or AAAA (IPv6) record, or change the PTR to a name that has it.",
	gate:     sendingHost,
	run:      checkClientFCrDNS,
}

func checkClientFCrDNS(ctx context.Context, ev *evaluation) Result {
	ptr := ev.ptrNames(ctx)
	if ptr.err != nil || ptr.ans.Kind != kindFound {
		return skip("no PTR name to confirm")
	}
	f := ev.forwardConfirmed(ctx)
	switch {
	case len(f.confirmed) > 0:
		return Result{Status: StatusPass, Host: f.confirmed[0], IP: ev.client,
			Detail: fmt.Sprintf("%s resolves back to %s", f.confirmed[0], ev.client)}
	case f.temp != nil:
		return Result{Status: StatusTempError, Host: f.tried[0], IP: ev.client, Detail: f.temp.Error()}
	}
	return Result{Status: StatusFail, Host: f.tried[0], IP: ev.client,
		Detail: fmt.Sprintf("no PTR name of %s resolves back to it (tried %s)", ev.client, strings.Join(f.tried, ", "))}
}
