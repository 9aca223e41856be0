package policy

import (
	"context"
	"fmt"
	"strings"
)

// MXRecords is the check of the sender domain's MX RRset.
const MXRecords CheckID = "mx.records"

// Implicit MX via A/AAAA only after NXDOMAIN/NODATA, never after an error.
var mxRecords = check{
	id:          MXRecords,
	chain:       chainMX,
	aboutDomain: true,
	what:        "the domain's MX records",
	failWhen:    "NXDOMAIN; no MX and no A/AAAA; null MX (`0 .`) alone or mixed",
	warnWhen:    "no MX, but A/AAAA (implicit MX)",
	rfc:         "RFC 5321 section 5.1, RFC 7505",
	action:      Defer,
	fix:         "Publish MX records naming the hosts that receive mail for the domain (RFC 5321 section 5.1); a domain that sends mail must be able to receive replies and bounces, so no null MX.",
	gate:        senderDomain,
	run:         checkMXRecords,
}

func checkMXRecords(ctx context.Context, ev *evaluation) Result {
	d := ev.sender.Domain
	f := ev.mxSet(ctx)
	switch {
	case f.answer.err != nil:
		return temperror(f.answer.err)
	case f.answer.ans.Kind == kindNXDomain:
		return Result{Status: StatusFail, Host: d, Detail: d + " does not exist (NXDOMAIN)"}
	case f.nullMX && len(f.hosts) == 0:
		return Result{Status: StatusFail, Host: d, Enhanced: "7.27",
			Detail: d + " publishes a null MX (RFC 7505): it accepts no mail, so replies and bounces to it cannot be delivered"}
	case f.nullMX:
		return Result{Status: StatusFail, Host: d, Enhanced: "7.27",
			Detail: d + " mixes a null MX with other MX records (invalid per RFC 7505 section 3)"}
	case f.implicitErr != nil:
		return temperror(f.implicitErr)
	case f.implicit:
		return Result{Status: StatusWarn, Host: d,
			Detail: d + " has no MX records; mail goes to its A/AAAA address (implicit MX, RFC 5321 section 5.1)"}
	case len(f.hosts) == 0:
		return Result{Status: StatusFail, Host: d, Detail: d + " has no MX records and no A/AAAA records: it cannot receive mail"}
	}
	return Result{Status: StatusPass, Host: d, Detail: describeMX(f)}
}

// mxListed is how many MX records a detail names.
const mxListed = 5

func describeMX(f mxFacts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d MX: ", len(f.hosts))
	for i, mx := range f.hosts[:min(len(f.hosts), mxListed)] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", mx.Pref, mx.Host)
	}
	if len(f.hosts) > mxListed {
		fmt.Fprintf(&b, ", +%d more", len(f.hosts)-mxListed)
	}
	return b.String()
}
