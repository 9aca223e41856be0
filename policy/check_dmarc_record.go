package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"
)

// DMARCRecord is the check that the sender domain has one valid DMARC policy.
const DMARCRecord CheckID = "dmarc.record"

// Receivers apply the DMARC policy of the From domain; a domain without one,
// or with a broken one, has its mail judged by guesswork. Discovery follows
// RFC 7489 section 6.6.3: the domain's own _dmarc record, else its
// organizational domain's (the Public Suffix List's registrable domain).
var dmarcRecord = check{
	id:          DMARCRecord,
	chain:       chainDNS,
	aboutDomain: true,
	what:        "the organizational domain of the sender (Public Suffix List) publishes one valid DMARC record at `_dmarc.`; a sub-domain without its own uses the organizational domain's",
	failWhen:    "the record is malformed or there are several",
	warnWhen:    "no record",
	rfc:         "RFC 7489",
	action:      Flag,
	fix:         "Publish one DMARC record at _dmarc of the domain (or its organizational domain), e.g. \"v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com\", and tighten p= once reports show all its mail aligned.",
	gate:        senderDomain,
	run:         checkDMARCRecord,
	memo:        &dmarcMemo,
}

// dmarcMemo remembers results by sender domain.
var dmarcMemo memo

func checkDMARCRecord(ctx context.Context, ev *evaluation) Result {
	return recall(ctx, ev, &dmarcMemo, ev.sender.Domain, func(ctx context.Context) (Result, bool) {
		r := discoverDMARC(ctx, ev)
		return r, r.Status == StatusTempError
	})
}

func discoverDMARC(ctx context.Context, ev *evaluation) Result {
	d := ev.sender.Domain
	names := []string{"_dmarc." + d}
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil && org != d {
		names = append(names, "_dmarc."+org)
	}
	for _, name := range names {
		r := ev.lookup(ctx, name, dns.TypeTXT)
		if r.err != nil {
			return Result{Status: StatusTempError, Host: name, Detail: r.err.Error()}
		}
		var records []string
		if r.ans.Kind == kindFound {
			for _, txt := range r.ans.TXT {
				// RFC 7489 section 6.6.3: other TXT records are not DMARC's.
				if strings.HasPrefix(txt, "v=DMARC1") {
					records = append(records, txt)
				}
			}
		}
		switch {
		case len(records) == 0:
			continue // the organizational domain's, if there is one to ask
		case len(records) > 1:
			return Result{Status: StatusFail, Host: name,
				Detail: fmt.Sprintf("%s has %d DMARC records; receivers then apply none (RFC 7489 section 6.6.3)", name, len(records))}
		}
		rec, err := dmarc.Parse(records[0])
		if err != nil {
			return Result{Status: StatusFail, Host: name,
				Detail: fmt.Sprintf("%s is not a valid DMARC record (%s): %s", name, Printable(strings.TrimPrefix(err.Error(), "dmarc: "), 120), Printable(records[0], 120))}
		}
		return Result{Status: StatusPass, Host: name, Detail: fmt.Sprintf("%s: p=%s", name, rec.Policy)}
	}
	return Result{Status: StatusWarn, Host: names[len(names)-1],
		Detail: fmt.Sprintf("%s publishes no DMARC record (asked %s)", d, strings.Join(names, ", "))}
}
