package policy

import (
	"context"
	"fmt"
)

// MXOutboundIP is the check of MX addresses that are this relay's outbound IPs.
const MXOutboundIP CheckID = "mx.outbound-ip"

// Listing send-only IPs as MX is a common mistake: an MX host receives mail.
var mxOutboundIP = check{
	id:          MXOutboundIP,
	chain:       chainMX,
	aboutDomain: true,
	what:        "an MX address that is one of this relay's outbound IPs (or the client)",
	failWhen:    "it does not accept port 25",
	warnWhen:    "it does (dual role, informational)",
	rfc:         "RFC 5321 section 5.1",
	action:      Defer,
	fix:         "Do not list outbound-only sending IPs as MX hosts: point the MX records at hosts that receive mail, or make that IP accept SMTP on port {port}.",
	gate:        probedMX,
	run:         checkMXOutboundIP,
}

func checkMXOutboundIP(ctx context.Context, ev *evaluation) Result {
	results := ev.probeResults(ctx)
	res := Result{Status: StatusPass, Detail: "no MX address is an outbound IP of this relay"}
	for _, t := range ev.mxTargets(ctx) {
		for _, ip := range t.addrs {
			p, probed := results[ip]
			if !probed || !ev.outbound(ip) {
				continue
			}
			var r Result
			switch {
			case p.Outcome.SpeaksSMTP():
				r = Result{Status: StatusWarn, Detail: fmt.Sprintf("MX %s [%s] is also an outbound IP of this relay and accepts SMTP (dual role)", t.Host, ip)}
			case p.Outcome.NoSMTP():
				r = Result{Status: StatusFail, Detail: fmt.Sprintf("MX %s [%s] is an outbound IP of this relay that does not accept SMTP on port %d (%s)", t.Host, ip, ev.e.cfg.Probe.Port, p.Summary())}
			default:
				r = Result{Status: StatusTempError, Detail: fmt.Sprintf("MX %s [%s] is an outbound IP of this relay; its probe was inconclusive (%s)", t.Host, ip, p.Summary())}
			}
			if r.Status > res.Status {
				r.Host, r.IP = t.Host, ip
				res = r
			}
		}
	}
	return res
}
