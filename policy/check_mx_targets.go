package policy

import (
	"cmp"
	"context"
	"fmt"
	"strings"
)

// MXTargets is the check of each MX target.
const MXTargets CheckID = "mx.targets"

var mxTargets = check{
	id:          MXTargets,
	chain:       chainMX,
	aboutDomain: true,
	what:        "each MX target is a host name with A/AAAA records: not an IP literal, not a special-purpose address (RFC 6890: loopback, RFC 1918, CGNAT, link-local, ULA, documentation, multicast, reserved). A target that is a CNAME breaks RFC 2181 section 10.3, but every major MTA follows it: it is usable, with a warning, and its addresses are probed",
	failWhen:    "no target usable",
	warnWhen:    "some targets unusable, or some target is a CNAME",
	rfc:         "RFC 5321 section 5.1, RFC 2181 section 10.3, RFC 6890",
	action:      Defer,
	fix:         "Point every MX record at a host name that has its own A/AAAA records (not a CNAME, not an IP address) with public addresses, or remove the record.",
	gate:        mailExchangers,
	run:         checkMXTargets,
}

func checkMXTargets(ctx context.Context, ev *evaluation) Result {
	ts := ev.mxTargets(ctx)
	var usable, bad int
	var firstBad, firstTemp, firstAlias *target
	for i := range ts {
		switch t := &ts[i]; {
		case t.usable():
			usable++
			if t.alias != "" {
				firstAlias = cmp.Or(firstAlias, t)
			}
		case t.undecided():
			firstTemp = cmp.Or(firstTemp, t)
		default:
			bad++
			firstBad = cmp.Or(firstBad, t)
		}
	}
	switch {
	case usable == 0 && firstBad == nil:
		return Result{Status: StatusTempError, Host: firstTemp.Host, Detail: firstTemp.temp.Error()}
	case usable == 0 && firstTemp != nil:
		return Result{Status: StatusTempError, Host: firstTemp.Host,
			Detail: fmt.Sprintf("no usable MX target so far (%s); %s", problem(*firstBad), firstTemp.temp)}
	case usable == 0:
		return Result{Status: StatusFail, Host: firstBad.Host, Detail: "no usable MX target: " + problems(ts)}
	case bad > 0:
		return Result{Status: StatusWarn, Host: firstBad.Host,
			Detail: fmt.Sprintf("%d of %d MX targets unusable: %s", bad, len(ts), problems(ts))}
	case firstAlias != nil:
		return Result{Status: StatusWarn, Host: firstAlias.Host, Detail: aliases(ts)}
	}
	detail := fmt.Sprintf("%d MX target(s) resolve to usable addresses", usable)
	if firstTemp != nil {
		detail += fmt.Sprintf("; %s did not resolve (%s)", firstTemp.Host, firstTemp.temp)
	}
	return Result{Status: StatusPass, Detail: detail}
}

// problem says why a target that is neither usable nor undecided is unusable.
func problem(t target) string {
	switch {
	case t.literal:
		return fmt.Sprintf("%s is an IP address, not a host name (RFC 5321 section 5.1)", t.Host)
	case len(t.excluded) > 0:
		return fmt.Sprintf("%s resolves only to special-purpose addresses: %s", t.Host, strings.Join(t.excluded, ", "))
	case t.nxdomain:
		return fmt.Sprintf("%s does not exist (NXDOMAIN)", t.Host)
	}
	return fmt.Sprintf("%s has no A or AAAA records", t.Host)
}

func problems(ts []target) string {
	var ps []string
	for _, t := range ts {
		if !t.usable() && !t.undecided() {
			ps = append(ps, problem(t))
		}
	}
	if a := aliases(ts); a != "" {
		ps = append(ps, a)
	}
	return strings.Join(ps, "; ")
}

// aliases describes the usable targets that are CNAMEs: MTAs follow them,
// but RFC 2181 section 10.3 forbids them, and some receivers do not.
func aliases(ts []target) string {
	var as []string
	for _, t := range ts {
		if t.usable() && t.alias != "" {
			as = append(as, fmt.Sprintf("%s is a CNAME for %s", t.Host, t.alias))
		}
	}
	if len(as) == 0 {
		return ""
	}
	return strings.Join(as, "; ") + " (an MX target must not be an alias, RFC 2181 section 10.3; mail is delivered through it)"
}
