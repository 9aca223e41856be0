package policy

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
)

// SPFRelay is the check that the sender domain's SPF policy authorizes
// this relay's outbound addresses.
const SPFRelay CheckID = "spf.relay"

// Receivers judge this relay's mail by the sender domain's SPF: a relay its
// customers' SPF leaves out sends mail that fails there. The evaluation is
// blitiri.com.ar/go/spf's (DNS and void lookup limits, include, redirect,
// macros; patched as third_party/spf/PATCHES.md says), through mxguard's
// caching resolver, and agrees with the RFC 7208 test suite
// (docs/RELIABILITY.md).
var spfRelay = check{
	id:          SPFRelay,
	chain:       chainDNS,
	aboutDomain: true,
	what:        "the sender domain's SPF policy authorizes every single outbound address in `outbound.ips` (wider prefixes are not evaluated). Receivers will judge this relay's mail by it",
	failWhen:    "some outbound address gets `fail`, or the policy is `permerror`",
	warnWhen:    "`softfail`, `neutral`, or no SPF record",
	rfc:         "RFC 7208",
	action:      Flag,
	fix:         "Authorize this relay's outbound addresses in the domain's SPF record.",
	gate: func(_ context.Context, ev *evaluation) string {
		if reason := ev.domainSkip(); reason != "" {
			return reason + spfOfInvalidDomain(ev.sender)
		}
		if len(ev.e.outboundSingles) == 0 {
			return "outbound.ips holds no single address to evaluate SPF for"
		}
		return ""
	},
	run:  checkSPFRelay,
	memo: &spfMemo,
}

// spfMemo remembers outcomes by spfKey; SPF's %{h} is the relay's HELO, so
// a reload that changes outbound.helo forgets them.
var spfMemo = memo{sameInputs: func(prev, next Config) bool { return prev.EgressHELO == next.EgressHELO }}

// spfOfInvalidDomain says, for a sender domain that fails domain.syntax,
// what receivers' SPF makes of it: "none" for an address literal or a name
// no query can carry (RFC 7208 section 4.3); other names (an underscore)
// SPF would evaluate, and spf.relay does not.
func spfOfInvalidDomain(s Sender) string {
	if s.Err == nil {
		return ""
	}
	if _, err := queryName(s.Domain); err != nil || strings.HasPrefix(s.Domain, "[") {
		return " (domain.syntax); receivers' SPF gives none for it (RFC 7208 section 4.3)"
	}
	return " (domain.syntax), so its SPF is not evaluated"
}

// singleOutboundIPs are the outbound.ips entries that are one address.
func singleOutboundIPs(prefixes []netip.Prefix) []netip.Addr {
	var ips []netip.Addr
	for _, p := range prefixes {
		if p.IsSingleIP() {
			ips = append(ips, p.Addr().Unmap())
		}
	}
	return ips
}

// spfOutcome is the SPF result for one outbound address.
type spfOutcome struct {
	ip     netip.Addr
	result spf.Result
	err    error
}

// spfKey is one SPF evaluation: a domain's policy for one address and one
// local part (a record may name it, as %{l}).
type spfKey struct {
	domain string
	local  string
	ip     netip.Addr
}

// spfFor evaluates the SPF policy of domain for ip and the sender's local
// part, or recalls it.
func spfFor(ctx context.Context, ev *evaluation, domain, local string, ip netip.Addr) spfOutcome {
	return recall(ctx, ev, &spfMemo, spfKey{domain, local, ip}, func(ctx context.Context) (spfOutcome, bool) {
		// Receivers see this relay's HELO (%{h}) and the envelope sender, with
		// postmaster for a missing local part (RFC 7208 sections 4.3, 7.3).
		res, err := spf.CheckHostWithSender(ip.AsSlice(), ev.e.cfg.EgressHELO, cmp.Or(local, "postmaster")+"@"+domain,
			spf.WithContext(ctx), spf.WithResolver(netResolver{ev.e.resolver}))
		return spfOutcome{ip, res, err}, res == spf.TempError
	})
}

// The SPF results in order of how much they hurt this relay's mail.
var spfRank = map[spf.Result]int{spf.Pass: 0, spf.None: 1, spf.Neutral: 1, spf.SoftFail: 2, spf.TempError: 3, spf.Fail: 4, spf.PermError: 4}

func checkSPFRelay(ctx context.Context, ev *evaluation) Result {
	d := ev.sender.Domain
	var outcomes []spfOutcome
	worst := spfOutcome{result: spf.Pass}
	for _, ip := range ev.e.outboundSingles {
		o := spfFor(ctx, ev, d, ev.sender.Local, ip)
		outcomes = append(outcomes, o)
		if spfRank[o.result] > spfRank[worst.result] {
			worst = o
		}
	}
	parts := make([]string, len(outcomes))
	var unauthorized []string
	for i, o := range outcomes {
		parts[i] = fmt.Sprintf("%s %s", o.ip, o.result)
		if o.result != spf.Pass {
			unauthorized = append(unauthorized, mechanism(o.ip))
		}
	}
	detail := d + " SPF: " + strings.Join(parts, ", ")
	if wider := len(ev.e.cfg.OutboundIPs) - len(outcomes); wider > 0 {
		detail += fmt.Sprintf(" (%d wider outbound.ips prefix(es) not evaluated)", wider)
	}
	r := Result{Host: d, IP: worst.ip, Detail: detail}
	switch worst.result {
	case spf.Pass:
		r.Status = StatusPass
	case spf.TempError:
		r.Status, r.Detail = StatusTempError, detail+": "+Printable(fmt.Sprint(worst.err), 200)
	case spf.PermError:
		r.Status, r.Detail = StatusFail, detail+": "+Printable(fmt.Sprint(worst.err), 200)
		r.fix = fmt.Sprintf("Fix the SPF record of %s (RFC 7208: %s); then authorize %s.", d, Printable(fmt.Sprint(worst.err), 120), strings.Join(unauthorized, " "))
	case spf.None:
		r.Status = StatusWarn
		r.fix = fmt.Sprintf("Publish an SPF record for %s that authorizes this relay, e.g. \"v=spf1 %s ~all\".", d, strings.Join(unauthorized, " "))
	case spf.Fail:
		r.Status = StatusFail
	default: // softfail, neutral
		r.Status = StatusWarn
	}
	if r.fix == "" && r.Status != StatusPass {
		r.fix = fmt.Sprintf("Add %s to the SPF record of %s, before its \"all\" (or include the SPF record of whoever runs this relay).", strings.Join(unauthorized, " "), d)
	}
	return r
}

// mechanism is the SPF mechanism that authorizes ip.
func mechanism(ip netip.Addr) string {
	if ip.Is4() {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}
