package policy

import (
	"context"
	"fmt"
	"strings"
)

// client.ptr: the client IP has PTR records (RFC 1912 section 2.1; RFC 7372
// 5.7.25 on failure).

const fixClientPTR = "Ask whoever controls the sending IP's reverse zone (usually the ISP or hosting provider) to publish a PTR record naming the mail host."

func checkClientPTR(ctx context.Context, ev *evaluation) Result {
	if ev.identitySkip != "" {
		return skip(ev.identitySkip)
	}
	r := ev.ptrNames(ctx)
	switch {
	case r.err != nil:
		return Result{Status: StatusTempError, IP: ev.client, Detail: r.err.Error()}
	case r.ans.Kind != Found:
		return Result{Status: StatusFail, IP: ev.client, Enhanced: "7.25",
			Detail: fmt.Sprintf("%s has no PTR record (%s)", ev.client, r.ans.Kind)}
	}
	return Result{Status: StatusPass, IP: ev.client, Host: r.ans.Names[0],
		Detail: fmt.Sprintf("PTR %s", strings.Join(r.ans.Names, ", "))}
}
