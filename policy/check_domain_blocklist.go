package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// DomainBlocklist is the check that the sender domain is not on a domain
// blocklist.
const DomainBlocklist CheckID = "domain.blocklist"

// Receivers ask domain blocklists (RHSBL, Spamhaus DBL, SURBL) about the
// domains in a message and junk or refuse it when one is listed: the relay
// would be sending mail its receivers will not take. A listing of the
// organizational domain (Public Suffix List) covers its sub-domains.
var domainBlocklist = check{
	id:          DomainBlocklist,
	chain:       chainDNS,
	aboutDomain: true,
	what:        "the sender domain (and its organizational domain) is not listed in any zone of `checks.domain_blocklists` (RHSBL/DBL: `DOMAIN.ZONE` A, TXT for the reason); refusals (Spamhaus `127.255.255.x`), answers outside 127.0.0.0/8 and zones that list everything are `temperror`",
	failWhen:    "listed (the detail names the zone and its TXT reason)",
	rfc:         "RFC 5782",
	action:      Flag,
	fix:         fmt.Sprintf(listingFix, "the list", "the domain"),
	gate: func(_ context.Context, ev *evaluation) string {
		if len(ev.e.cfg.DomainBlocklists) == 0 {
			return "checks.domain_blocklists names no zone"
		}
		return ev.domainSkip()
	},
	run:  checkDomainBlocklist,
	memo: &blocklistMemo,
}

// blocklistMemo remembers results by domain while the zones stay the same.
var blocklistMemo = memo{sameInputs: func(prev, next Config) bool {
	return slices.EqualFunc(prev.DomainBlocklists, next.DomainBlocklists, func(a, b BlocklistZone) bool {
		return a.Zone == b.Zone && a.Name == b.Name && slices.Equal(a.Listed, b.Listed) && slices.Equal(a.Refused, b.Refused)
	})
}}

func checkDomainBlocklist(ctx context.Context, ev *evaluation) Result {
	return recall(ctx, ev, &blocklistMemo, ev.sender.Domain, func(ctx context.Context) (Result, bool) {
		r := askDomainBlocklists(ctx, ev, ev.sender.Domain)
		return r, r.Status == StatusTempError
	})
}

func askDomainBlocklists(ctx context.Context, ev *evaluation, d string) Result {
	names := []string{d}
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil && org != d {
		names = append(names, org)
	}
	zones := ev.e.cfg.DomainBlocklists
	answers := make([][]ZoneAnswer, len(names))
	fanOut(ctx, len(names), len(names) == 1, func(i int) {
		answers[i] = ev.e.askZones(ctx, zones, names[i], notListedName)
	})
	var temp *Result
	for i, name := range names {
		r := blocklistResult(name, answers[i])
		r.Host = name
		switch {
		case r.Status == StatusFail:
			r.fix = fmt.Sprintf(listingFix, listedIn(answers[i]), name)
			return r
		case r.Status == StatusTempError && temp == nil:
			temp = &r
		}
	}
	if temp != nil {
		return *temp
	}
	r := blocklistResult(d, answers[0])
	r.Host = d
	if len(names) > 1 {
		r.Detail += fmt.Sprintf(", nor is its organizational domain %s", names[1])
	}
	return r
}

// listingFix is the fix text of a listing: the zones, then the subject.
const listingFix = "Find out why %s lists %s (the TXT reason, the list's lookup page), stop what caused it (often a compromised account or web form), then ask the list to delist it."

// listedIn names the zones that list a subject.
func listedIn(answers []ZoneAnswer) string {
	var zones []string
	for _, a := range answers {
		if a.Status == StatusFail {
			zones = append(zones, a.Zone)
		}
	}
	return strings.Join(zones, " and ")
}
