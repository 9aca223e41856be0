package policy

import (
	"context"
	"fmt"
	"strings"
)

// client.fcrdns: some PTR name of the client resolves (A for IPv4, AAAA for
// IPv6) back to the client IP: forward-confirmed reverse DNS (RFC 1912 section 2.1,
// RFC 7372 5.7.25).

const fixClientFCrDNS = "Make the PTR name of the sending IP resolve back to that IP: add the matching A (IPv4) or AAAA (IPv6) record, or change the PTR to a name that has it."

func checkClientFCrDNS(ctx context.Context, ev *evaluation) Result {
	if ev.identitySkip != "" {
		return skip(ev.identitySkip)
	}
	ptr := ev.ptrNames(ctx)
	if ptr.err != nil || ptr.ans.Kind != Found {
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
	return Result{Status: StatusFail, Host: f.tried[0], IP: ev.client, Enhanced: "7.25",
		Detail: fmt.Sprintf("no PTR name of %s resolves back to it (tried %s)", ev.client, strings.Join(f.tried, ", "))}
}
