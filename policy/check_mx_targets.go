package policy

import (
	"cmp"
	"context"
	"fmt"
	"strings"
)

// mx.targets: every MX target is a host name (not an IP literal, RFC 5321
// section 5.1; not a CNAME, RFC 2181 section 10.3) with A/AAAA records outside the
// special-purpose registries (RFC 6890).

const fixMXTargets = "Point every MX record at a host name that has its own A/AAAA records (not a CNAME, not an IP address) with public addresses, or remove the record."

func checkMXTargets(ctx context.Context, ev *evaluation) Result {
	if reason := ev.domainSkip(); reason != "" {
		return skip(reason)
	}
	if reason := ev.mxSet(ctx).unusableReason(); reason != "" {
		return skip(reason)
	}
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
		case t.temp != nil:
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
			Detail: fmt.Sprintf("no usable MX target so far (%s); %s", firstBad.problem, firstTemp.temp)}
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

func problems(ts []target) string {
	var ps []string
	for _, t := range ts {
		if t.problem != "" {
			ps = append(ps, t.problem)
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
