package policy

import (
	"context"
	"fmt"
	"strings"
)

// DMARCRecord is the check that the sender domain has one valid DMARC policy.
const DMARCRecord CheckID = "dmarc.record"

// Receivers apply the DMARC policy of the From domain; a domain without one,
// or with a broken one, has its mail judged by guesswork. Discovery is the
// DNS tree walk of RFC 9989 section 4.10: the domain's own _dmarc record,
// else the nearest parent's, up to the top-level domain.
var dmarcRecord = check{
	id:          DMARCRecord,
	chain:       chainDNS,
	aboutDomain: true,
	what:        "the sender domain, or the nearest parent by the RFC 9989 DNS tree walk, publishes one valid DMARC record at `_dmarc.`",
	failWhen:    "the record is malformed or there are several",
	warnWhen:    "no record",
	rfc:         "RFC 9989",
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
		r := dmarcRecordOf(ctx, ev)
		return r, r.Status == StatusTempError
	})
}

func dmarcRecordOf(ctx context.Context, ev *evaluation) Result {
	d := ev.sender.Domain
	found, err := ev.discoverDMARC(ctx, d, false)
	if err != nil {
		return Result{Status: StatusTempError, Host: found.asked[len(found.asked)-1], Detail: err.Error()}
	}
	switch {
	case found.problem != "":
		return Result{Status: StatusFail, Host: found.name, Detail: found.problem + " (RFC 9989 section 4.10)"}
	case found.record == nil:
		return Result{Status: StatusWarn, Host: found.asked[len(found.asked)-1],
			Detail: fmt.Sprintf("%s publishes no DMARC record (asked %s)", d, strings.Join(found.asked, ", "))}
	}
	return Result{Status: StatusPass, Host: found.name, Detail: fmt.Sprintf("%s: p=%s", found.name, found.effectivePolicy())}
}
