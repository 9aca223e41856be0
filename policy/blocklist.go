package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// DNS blocklists (RFC 5782): domain.blocklist asks checks.domain_blocklists
// about the sender domain, the egress self-check asks outbound.dnsbl_zones
// about the relay's own addresses. Every query goes through the caching
// resolver: a warm decision asks no list.

// BlocklistZone is one blocklist zone and how to read its answers.
type BlocklistZone struct {
	// Zone is the zone queried: SUBJECT.Zone.
	Zone string
	// Name is what reports, logs and metrics call the zone; empty is Zone,
	// or for a Spamhaus DQS zone the zone without its key.
	Name string
	// Listed are the A answers that mean "listed" (empty: the zone's known
	// codes, else 127.0.0.0/8); Refused those that mean the list refused
	// the query (empty: the zone's known ones). Refused goes first.
	Listed, Refused []netip.Prefix
}

// knownZone is what a well-known list documents about its answers.
type knownZone struct {
	zone    string // the zone, or ".suffix" for zones named KEY.suffix
	listed  []netip.Prefix
	refused []netip.Prefix
	// hint says what to do about a refused query.
	hint string
}

func mustPrefixes(cidrs ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(cidrs))
	for i, s := range cidrs {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// The lists' own documentation: Spamhaus answers 127.255.255.0/24 for
// queries it refuses (and the DBL 127.0.1.255 for an IP address queried in
// it); SURBL and URIBL answer 127.0.0.1 to resolvers they block.
var (
	loopbackNet     = netip.MustParsePrefix("127.0.0.0/8")
	spamhausRefused = mustPrefixes("127.255.255.0/24")
	spamhausHint    = "use your own resolver (not a public one), or a Spamhaus DQS key"
	blockedHint     = "use your own resolver, within the list's free-use limits"
	knownZones      = []knownZone{
		{"zen.spamhaus.org", mustPrefixes("127.0.0.0/24"), spamhausRefused, spamhausHint},
		{"dbl.spamhaus.org", mustPrefixes("127.0.1.0/24"), mustPrefixes("127.0.1.255/32", "127.255.255.0/24"), spamhausHint},
		{".zen.dq.spamhaus.net", mustPrefixes("127.0.0.0/24"), spamhausRefused, "check the DQS key"},
		{".dbl.dq.spamhaus.net", mustPrefixes("127.0.1.0/24"), mustPrefixes("127.0.1.255/32", "127.255.255.0/24"), "check the DQS key"},
		{"bl.spamcop.net", mustPrefixes("127.0.0.2/32"), nil, ""},
		{"b.barracudacentral.org", mustPrefixes("127.0.0.2/32"), nil, "register your resolver's address with Barracuda"},
		{"multi.surbl.org", mustPrefixes("127.0.0.0/24"), mustPrefixes("127.0.0.1/32"), blockedHint},
		{"multi.uribl.com", mustPrefixes("127.0.0.0/24"), mustPrefixes("127.0.0.1/32"), blockedHint},
	}
	// spamhausCodes are what Spamhaus's refusals mean.
	spamhausCodes = map[netip.Addr]string{
		netip.MustParseAddr("127.0.1.255"):     "an IP address queried in a domain list",
		netip.MustParseAddr("127.255.255.252"): "typing error in the zone name",
		netip.MustParseAddr("127.255.255.254"): "query through a public or open resolver",
		netip.MustParseAddr("127.255.255.255"): "too many queries",
	}
)

// known returns what is known of zone, and the name of its key-less form.
func known(zone string) (knownZone, string, bool) {
	for _, k := range knownZones {
		if k.zone == zone {
			return k, zone, true
		}
		if strings.HasPrefix(k.zone, ".") && strings.HasSuffix(zone, k.zone) {
			return k, k.zone[1:], true
		}
	}
	return knownZone{}, zone, false
}

// withDefaults fills in the name and the answer codes a zone leaves out.
func (z BlocklistZone) withDefaults() BlocklistZone {
	k, name, ok := known(z.Zone)
	if z.Name == "" {
		z.Name = name
	}
	if len(z.Listed) == 0 {
		z.Listed = k.listed
		if !ok {
			z.Listed = []netip.Prefix{loopbackNet}
		}
	}
	if len(z.Refused) == 0 {
		z.Refused = k.refused
	}
	return z
}

// Label is what reports call the zone: Name, or its default.
func (z BlocklistZone) Label() string { return z.withDefaults().Name }

func zonesWithDefaults(zones []BlocklistZone) []BlocklistZone {
	out := make([]BlocklistZone, len(zones))
	for i, z := range zones {
		out[i] = z.withDefaults()
	}
	return out
}

// ZoneAnswer is what one blocklist zone said about one address or domain.
type ZoneAnswer struct {
	Zone string // the zone's Name
	// Status is fail (listed), pass (not listed) or temperror (no answer
	// to believe: an error, a refusal, a broken zone).
	Status Status
	Code   netip.Addr // the A answer that decided, if any
	// Detail is the listing's TXT reason, or why there is no answer.
	Detail string
}

func (a ZoneAnswer) String() string {
	switch a.Status {
	case StatusFail:
		s := fmt.Sprintf("listed in %s (%s", a.Zone, a.Code)
		if a.Detail != "" {
			s += ": " + a.Detail
		}
		return s + ")"
	case StatusPass:
		if a.Detail != "" {
			return fmt.Sprintf("not listed in %s (%s)", a.Zone, a.Detail)
		}
		return "not listed in " + a.Zone
	}
	return a.Zone + ": " + a.Detail
}

// maxReason bounds a listing's TXT reason in reports.
const maxReason = 200

// reversed is ip as a DNSBL query names it (RFC 5782 section 2.1, 2.4):
// octets in reverse for IPv4, nibbles in reverse for IPv6.
func reversed(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	var s strings.Builder
	b := ip.As16()
	for i := len(b) - 1; i >= 0; i-- {
		fmt.Fprintf(&s, "%x.%x.", b[i]&0xf, b[i]>>4)
	}
	return strings.TrimSuffix(s.String(), ".")
}

// The entries no list may list (RFC 5782 section 5): a zone that does
// lists everything, and its answers mean nothing.
var (
	notListed4    = reversed(netip.MustParseAddr("127.0.0.1"))
	notListed6    = reversed(netip.MustParseAddr("::ffff:127.0.0.1"))
	notListedName = "invalid"
)

// What a zone whose answers mean nothing is told apart by.
const (
	errListsAll = "broken: it lists %s, which no list may list (RFC 5782 section 5); it lists everything, so its answers mean nothing"
	errNotDNSBL = "broken: it answered %s, outside 127.0.0.0/8 (RFC 5782 section 2.1); the zone is not a blocklist, or its name is wrong"
)

// askZone looks subject (reversed address or domain) up in z: the A answer
// decides, a listing's TXT gives its reason. A listing is believed only if
// the zone does not also list test, its entry that must not be listed.
func (e *Engine) askZone(ctx context.Context, z BlocklistZone, subject, test string) ZoneAnswer {
	a := ZoneAnswer{Zone: z.Name}
	name := subject + "." + z.Zone
	ans, err := e.resolver.Lookup(ctx, name, dns.TypeA)
	if err != nil {
		var de *dnsError
		if errors.As(err, &de) && de.Kind == errInvalidName {
			a.Status, a.Detail = StatusPass, "the name is too long to look up"
			return a
		}
		a.Status, a.Detail = StatusTempError, z.redact(err.Error())
		return a
	}
	a.Status, a.Code, a.Detail = z.judge(ans)
	if a.Status != StatusFail {
		return a
	}
	var probe, txt lookupResult // at the same time, unless cached
	probeName := test + "." + z.Zone
	fanOut(ctx, 2, e.resolver.cached(probeName, dns.TypeA) && e.resolver.cached(name, dns.TypeTXT), func(i int) {
		if i == 0 {
			probe.ans, probe.err = e.resolver.Lookup(ctx, probeName, dns.TypeA)
		} else {
			txt.ans, txt.err = e.resolver.Lookup(ctx, name, dns.TypeTXT)
		}
	})
	if probe.err != nil {
		a.Status, a.Detail = StatusTempError, "cannot tell whether the zone lists everything: "+z.redact(probe.err.Error())
		return a
	}
	if st, code, _ := z.judge(probe.ans); st == StatusFail {
		return ZoneAnswer{Zone: z.Name, Status: StatusTempError, Code: code, Detail: fmt.Sprintf(errListsAll, testEntry(test))}
	}
	if txt.err == nil && txt.ans.Kind == kindFound {
		a.Detail = Printable(z.redact(strings.Join(txt.ans.TXT, " ")), maxReason)
	}
	return a
}

// testEntry names an RFC 5782 test entry for a report.
func testEntry(test string) string {
	switch test {
	case notListed4:
		return "127.0.0.1"
	case notListed6:
		return "::ffff:127.0.0.1"
	}
	return strings.ToUpper(test)
}

// judge reads the A answer of a query: refusals and answers outside
// 127.0.0.0/8 first (they are never listings), then the listing codes.
func (z BlocklistZone) judge(ans *dnsAnswer) (Status, netip.Addr, string) {
	if ans.Kind != kindFound {
		return StatusPass, netip.Addr{}, ""
	}
	var listed, other netip.Addr
	for _, ip := range ans.Addrs {
		ip = ip.Unmap()
		switch {
		case !ip.Is4() || !loopbackNet.Contains(ip):
			return StatusTempError, ip, fmt.Sprintf(errNotDNSBL, ip)
		case inPrefixes(ip, z.Refused):
			return StatusTempError, ip, z.refusal(ip)
		case inPrefixes(ip, z.Listed):
			listed = ip
		default:
			other = ip
		}
	}
	if listed.IsValid() {
		return StatusFail, listed, ""
	}
	return StatusPass, other, fmt.Sprintf("answered %s, not a listing code of this zone", other)
}

// refusal says what a refused query's code means and what to do about it.
func (z BlocklistZone) refusal(code netip.Addr) string {
	k, _, _ := known(z.Zone)
	what := code.String()
	if m, ok := spamhausCodes[code]; ok && strings.Contains(k.zone, "spamhaus") {
		what += ": " + m
	}
	s := fmt.Sprintf("query refused (%s)", what)
	if k.hint != "" {
		s += ": " + k.hint
	} else {
		s += ": see the list's terms of use"
	}
	return s
}

// redact keeps a DQS key, part of the zone, out of what is reported.
func (z BlocklistZone) redact(s string) string {
	if z.Name == z.Zone {
		return s
	}
	return strings.ReplaceAll(s, z.Zone, z.Name)
}

// askZones asks every zone about one subject, in parallel unless cached.
func (e *Engine) askZones(ctx context.Context, zones []BlocklistZone, subject, test string) []ZoneAnswer {
	warm := true
	for _, z := range zones {
		warm = warm && e.resolver.cached(subject+"."+z.Zone, dns.TypeA)
	}
	answers := make([]ZoneAnswer, len(zones))
	fanOut(ctx, len(zones), warm, func(i int) { answers[i] = e.askZone(ctx, zones[i], subject, test) })
	return answers
}

// blocklistResult sums up the answers about subject: listed anywhere is
// fail, else an unanswered zone is temperror, else pass.
func blocklistResult(subject string, answers []ZoneAnswer) Result {
	r := Result{Status: StatusPass}
	var listed, temp, clean []string
	for _, a := range answers {
		switch a.Status {
		case StatusFail:
			listed = append(listed, a.String())
		case StatusTempError:
			temp = append(temp, a.String())
		default:
			clean = append(clean, a.String())
		}
	}
	var parts []string
	switch {
	case len(listed) > 0:
		r.Status = StatusFail
		parts = append(listed, temp...)
	case len(temp) > 0:
		r.Status = StatusTempError
		parts = temp
	default:
		parts = clean
	}
	r.Detail = subject + " is " + strings.Join(parts, "; ")
	if r.Status == StatusTempError {
		r.Detail = subject + ": " + strings.Join(parts, "; ")
	}
	return r
}
