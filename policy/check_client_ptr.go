package policy

import (
	"context"
	"fmt"
	"strings"
)

// ClientPTR is the check that the client IP has PTR records.
const ClientPTR CheckID = "client.ptr"

var clientPTR = check{
	id:       ClientPTR,
	chain:    chainDNS,
	what:     "the client IP has PTR records",
	failWhen: "none",
	rfc:      "RFC 1912 section 2.1, RFC 7372",
	action:   Flag,
	enhanced: "7.25",
	fix:      "Ask whoever controls the sending IP's reverse zone (usually the ISP or hosting provider) to publish a PTR record naming the mail host.",
	gate:     sendingHost,
	run:      checkClientPTR,
}

func checkClientPTR(ctx context.Context, ev *evaluation) Result {
	r := ev.ptrNames(ctx)
	switch {
	case r.err != nil:
		return Result{Status: StatusTempError, IP: ev.client, Detail: r.err.Error()}
	case r.ans.Kind != kindFound:
		return Result{Status: StatusFail, IP: ev.client,
			Detail: fmt.Sprintf("%s has no PTR record (%s)", ev.client, r.ans.Kind)}
	}
	return Result{Status: StatusPass, IP: ev.client, Host: r.ans.Names[0],
		Detail: fmt.Sprintf("PTR %s", strings.Join(r.ans.Names, ", "))}
}
