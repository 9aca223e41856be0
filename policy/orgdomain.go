package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"
)

// dmarcDiscovery is what the DNS tree walk of RFC 9989 section 4.10 found
// for a domain: the DMARC record that applies to it, and its
// organizational domain.
type dmarcDiscovery struct {
	domain string
	// name is the _dmarc name of the record that applies ("" for none);
	// own says it is the domain's own (p=), not a parent's (sp=).
	name   string
	record *dmarc.Record
	own    bool
	// problem, when set, says why the records at name are no policy
	// (malformed, or several).
	problem string
	org     string
	asked   []string
}

// maxWalkQueries bounds the walk (RFC 9989 section 4.10): a domain of
// eight labels or more is asked for itself, then from its seven
// right-most labels up.
const maxWalkQueries = 8

// walkTargets are the names the tree walk asks, domain first.
func walkTargets(domain string) []string {
	labels := strings.Split(domain, ".")
	targets := []string{domain}
	from := 1
	if len(labels) > maxWalkQueries-1 {
		from = len(labels) - (maxWalkQueries - 1)
	}
	for i := from; i < len(labels); i++ {
		targets = append(targets, strings.Join(labels[i:], "."))
	}
	return targets
}

// discoverDMARC walks the DNS tree from domain: the first name with DMARC
// records is the policy's; with needOrg the walk goes on to the
// organizational domain (RFC 9989 section 4.10.2): where a record says
// psd=n, one label below one that says psd=y, else the highest name with a
// record, else the domain itself. A DNS error ends it with that error.
func (ev *evaluation) discoverDMARC(ctx context.Context, domain string, needOrg bool) (dmarcDiscovery, error) {
	found := dmarcDiscovery{domain: domain, org: domain}
	targets := walkTargets(domain)
	for i, target := range targets {
		name := "_dmarc." + target
		found.asked = append(found.asked, name)
		r := ev.lookup(ctx, name, dns.TypeTXT)
		if r.err != nil {
			return found, fmt.Errorf("%s: %w", name, r.err)
		}
		var records []string
		if r.ans.Kind == kindFound {
			for _, txt := range r.ans.TXT {
				// RFC 9989 section 4.10.1: other TXT records are not DMARC's.
				if strings.HasPrefix(txt, "v=DMARC1") {
					records = append(records, txt)
				}
			}
		}
		if len(records) == 0 {
			continue
		}
		var rec *dmarc.Record
		var problem string
		if len(records) > 1 {
			problem = fmt.Sprintf("%s has %d DMARC records; receivers then apply none", name, len(records))
		} else if parsed, err := dmarc.Parse(records[0]); err != nil {
			problem = fmt.Sprintf("%s is not a valid DMARC record (%s): %s", name,
				Printable(strings.TrimPrefix(err.Error(), "dmarc: "), 120), Printable(records[0], 120))
			// Receivers read past bad values (RFC 9989 sections 4.7 and
			// 4.8): the record still applies, with defaults for them.
			rec = lenientDMARC(records[0])
		} else {
			rec = parsed
		}
		if found.name == "" {
			found.name, found.record, found.own, found.problem = name, rec, i == 0, problem
			if !needOrg {
				return found, nil
			}
		}
		if rec == nil {
			continue // no organizational boundary from a broken record
		}
		found.org = target
		switch tagValue(records[0], "psd") {
		case "n":
			return found, nil
		case "y":
			if i > 0 { // a public suffix: the organization is the name below it
				found.org = labelBelow(domain, target)
			}
			return found, nil
		}
	}
	return found, nil
}

// walkDMARC is discoverDMARC with the organizational domain, remembered
// per domain as the answers it comes from are.
func (ev *evaluation) walkDMARC(ctx context.Context, domain string) (dmarcDiscovery, error) {
	got := recall(ctx, ev, &dmarcWalkMemo, domain, func(ctx context.Context) (discovered, bool) {
		d, err := ev.discoverDMARC(ctx, domain, true)
		return discovered{d, err}, err != nil
	})
	return got.d, got.err
}

// lenientDMARC reads a record go-msgauth's RFC 7489 parser refused as
// RFC 9989 receivers do: a missing or unknown p= is none, an unknown sp=
// is p=, unknown alignment modes are relaxed, unknown tags are ignored.
func lenientDMARC(record string) *dmarc.Record {
	rec := &dmarc.Record{Policy: dmarc.PolicyNone}
	policy := func(v string) (dmarc.Policy, bool) {
		switch p := dmarc.Policy(v); p {
		case dmarc.PolicyNone, dmarc.PolicyQuarantine, dmarc.PolicyReject:
			return p, true
		}
		return "", false
	}
	if p, ok := policy(tagValue(record, "p")); ok {
		rec.Policy = p
	}
	if sp, ok := policy(tagValue(record, "sp")); ok {
		rec.SubdomainPolicy = sp
	}
	for _, a := range []struct {
		tag  string
		mode *dmarc.AlignmentMode
	}{{"adkim", &rec.DKIMAlignment}, {"aspf", &rec.SPFAlignment}} {
		if m := dmarc.AlignmentMode(tagValue(record, a.tag)); m == dmarc.AlignmentStrict {
			*a.mode = m
		} else {
			*a.mode = dmarc.AlignmentRelaxed
		}
	}
	return rec
}

// labelBelow is the name under suffix on the way to domain, one label longer.
func labelBelow(domain, suffix string) string {
	rest := strings.TrimSuffix(domain, "."+suffix)
	return rest[strings.LastIndexByte(rest, '.')+1:] + "." + suffix
}

// dmarcTag is the value of tag in a DMARC record, "" when absent; go-msgauth
// predates RFC 9989's psd= tag.
func tagValue(record, tag string) string {
	for _, part := range strings.Split(record, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), tag) {
			return strings.ToLower(strings.TrimSpace(v))
		}
	}
	return ""
}

// effectivePolicy is the p= (the domain's own record) or sp= (a parent's)
// that receivers apply to the domain's mail; "" without a record.
func (d dmarcDiscovery) effectivePolicy() dmarc.Policy {
	switch {
	case d.record == nil:
		return ""
	case !d.own && d.record.SubdomainPolicy != "":
		return d.record.SubdomainPolicy
	}
	return d.record.Policy
}

// aligned says whether two domains align in mode (RFC 7489 section 3.1):
// equal under strict, with the same organizational domain under relaxed.
func (ev *evaluation) aligned(ctx context.Context, a, b string, mode dmarc.AlignmentMode, orgA string) (bool, error) {
	if a == b {
		return true, nil
	}
	if mode == dmarc.AlignmentStrict {
		return false, nil
	}
	if !strings.HasSuffix(a, "."+orgA) && a != orgA || !strings.HasSuffix(b, "."+orgA) && b != orgA {
		return false, nil // b is not under a's organizational domain: no walk needed
	}
	other, err := ev.walkDMARC(ctx, b)
	if err != nil {
		return false, err
	}
	return other.org == orgA, nil
}
