package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
)

// DMARCAlignment is the check that DMARC would pass at the receiver.
const DMARCAlignment CheckID = "dmarc.alignment"

// Receivers apply the author domain's DMARC policy to a message unless SPF
// or DKIM passes for a domain aligned with it (RFC 7489 section 3.1, RFC
// 9989); Gmail answers 550 5.7.26 and Outlook.com 550 5.7.515. Bulk
// senders need both halves at Gmail, Yahoo and Outlook.com.
var dmarcAlignment = check{
	id:           DMARCAlignment,
	chain:        chainMessage,
	aboutMessage: true,
	what:         "DMARC would pass at the receiver: one RFC5322.From address; SPF aligned (the envelope domain aligns with the author domain under `aspf`, and `spf.relay` passes for the relay's outbound addresses) or DKIM aligned (a verifying signature whose `d=` aligns under `adkim`); organizational domains by the RFC 9989 DNS tree walk",
	failWhen:     "neither aligns, or the From field has zero or several addresses; the detail names the author domain's published `p=` and what receivers do with it",
	warnWhen:     "DMARC passes through only one of SPF and DKIM while the other does not pass at all (bulk senders need both at Gmail, Yahoo, Outlook.com)",
	rfc:          "RFC 7489 section 3.1, RFC 9989",
	action:       Flag,
	fix:          "Sign with d= the author domain (OpenDKIM SigningTable), or make the envelope sender an address of the author domain whose SPF authorizes this relay.",
	gate:         authoredMessage,
	run:          checkDMARCAlignment,
	memo:         &dmarcWalkMemo,
}

// dmarcWalkMemo remembers the tree walk of each domain (RFC 9989 section
// 4.10): its policy and organizational domain.
var dmarcWalkMemo memo

func checkDMARCAlignment(ctx context.Context, ev *evaluation) Result {
	if ev.msg.unverifiable != "" {
		return ev.msg.unverified()
	}
	a := ev.author()
	if a.problem != "" {
		return Result{Status: StatusFail, Detail: a.problem,
			fix: "Send each message with one From field holding one address of the domain that signs it (RFC 5322 section 3.6.2)."}
	}
	pol, err := ev.authorPolicy(ctx)
	if err != nil {
		return Result{Status: StatusTempError, Host: a.domain, Detail: "discovering the author domain's DMARC policy: " + err.Error()}
	}
	dkimAligned, err := ev.alignedSignatures(ctx)
	if err != nil {
		return Result{Status: StatusTempError, Host: a.domain, Detail: "finding the organizational domain of a signature: " + err.Error()}
	}
	dkimPasses := false      // some signature verifies, aligned or not
	var dkimUnknown []string // signatures a temporary error left unjudged
	for _, s := range ev.signatures() {
		dkimPasses = dkimPasses || s.err == nil
		if dkim.IsTempFail(s.err) {
			dkimUnknown = append(dkimUnknown, fmt.Sprintf("%s: %s", s, reason(s.err)))
		}
	}
	spf, err := ev.spfHalf(ctx, a.domain, pol)
	if err != nil {
		return Result{Status: StatusTempError, Host: a.domain, Detail: "finding the envelope domain's organizational domain: " + err.Error()}
	}
	stance := receiverStance(a.domain, pol)
	switch {
	case len(dkimAligned) > 0 && spf.aligned:
		return Result{Status: StatusPass, Host: a.domain, Detail: fmt.Sprintf("DKIM (%s) and SPF (%s) align with %s", dkimAligned[0], spf.domain, a.domain)}
	case len(dkimAligned) > 0 && (!spf.judged || spf.unknown):
		return Result{Status: StatusPass, Host: a.domain, Detail: fmt.Sprintf("DKIM (%s) aligns with %s; SPF is not judged: %s", dkimAligned[0], a.domain, spf.why)}
	case len(dkimAligned) > 0 && !spf.passes:
		return Result{Status: StatusWarn, Host: a.domain, Detail: fmt.Sprintf("DMARC passes through DKIM (%s) alone: %s; bulk senders need SPF too at Gmail, Yahoo and Outlook.com", dkimAligned[0], spf.why),
			fix: fmt.Sprintf("Make the envelope sender's SPF authorize this relay (spf.relay), with the envelope domain under %s.", pol.org)}
	case len(dkimAligned) > 0:
		return Result{Status: StatusPass, Host: a.domain, Detail: fmt.Sprintf("DKIM (%s) aligns with %s; SPF passes for %s, which does not align", dkimAligned[0], a.domain, spf.domain)}
	case spf.aligned && !dkimPasses && len(dkimUnknown) > 0:
		return Result{Status: StatusPass, Host: a.domain, Detail: fmt.Sprintf("SPF (%s) aligns with %s; DKIM could not be verified here: %s", spf.domain, a.domain, strings.Join(dkimUnknown, "; "))}
	case spf.aligned && !dkimPasses:
		return Result{Status: StatusWarn, Host: a.domain, Detail: fmt.Sprintf("DMARC passes through SPF (%s) alone: no DKIM signature verifies; bulk senders need DKIM too at Gmail, Yahoo and Outlook.com", spf.domain),
			fix: fmt.Sprintf("Sign with d=%s (OpenDKIM SigningTable) on this relay, before mxguard.", a.domain)}
	case spf.aligned:
		return Result{Status: StatusPass, Host: a.domain, Detail: fmt.Sprintf("SPF (%s) aligns with %s; DKIM verifies but for a domain that does not align", spf.domain, a.domain)}
	}
	// Neither aligns as far as is known: a temporary error may hide the
	// half that would (never a fail on a temporary error).
	if len(dkimUnknown) > 0 || spf.unknown {
		var pending []string
		if len(dkimUnknown) > 0 {
			pending = append(pending, "DKIM: "+strings.Join(dkimUnknown, "; "))
		}
		if spf.unknown {
			pending = append(pending, spf.why)
		}
		return Result{Status: StatusTempError, Host: a.domain,
			Detail: fmt.Sprintf("DMARC alignment for %s could not be judged: %s", a.domain, strings.Join(pending, "; "))}
	}
	var why []string
	if dkimPasses {
		why = append(why, fmt.Sprintf("no verifying DKIM signature has d= aligned with %s", a.domain))
	} else {
		why = append(why, "no DKIM signature verifies")
	}
	why = append(why, spf.why)
	return Result{Status: StatusFail, Host: a.domain,
		Detail: fmt.Sprintf("DMARC fails for %s: %s. %s", a.domain, strings.Join(why, "; "), stance),
		fix:    fmt.Sprintf("Sign with d=%s (OpenDKIM SigningTable), or make the envelope sender @%s with SPF authorizing this relay.", a.domain, a.domain)}
}

// receiverStance says what the author domain publishes and what receivers
// do with a message that fails DMARC.
func receiverStance(domain string, pol dmarcDiscovery) string {
	switch p := pol.effectivePolicy(); p {
	case dmarc.PolicyReject:
		return fmt.Sprintf("%s publishes p=reject (%s): receivers refuse the message (Gmail 550 5.7.26, Outlook.com 550 5.7.515)", domain, pol.name)
	case dmarc.PolicyQuarantine:
		return fmt.Sprintf("%s publishes p=quarantine (%s): receivers put the message in spam", domain, pol.name)
	case dmarc.PolicyNone:
		return fmt.Sprintf("%s publishes p=none (%s): receivers deliver by their own judgement, and Gmail, Yahoo and Outlook.com junk or refuse unauthenticated bulk mail", domain, pol.name)
	}
	if pol.problem != "" {
		return pol.problem + "; receivers judge the message without a policy, and junk or refuse unauthenticated mail"
	}
	return fmt.Sprintf("%s publishes no DMARC policy (asked %s); receivers junk or refuse unauthenticated mail", domain, strings.Join(pol.asked, ", "))
}

// spfFacts is DMARC's SPF half for the message.
type spfFacts struct {
	judged  bool   // false: SPF is not judged here (no single outbound address; spf.relay skipped)
	unknown bool   // spf.relay could not finish (temperror)
	passes  bool   // spf.relay passes for the envelope domain
	aligned bool   // and that domain aligns with the author domain
	domain  string // the envelope domain
	why     string // why the SPF half does not count, when it does not
}

// spfHalf judges SPF as DMARC does: the envelope domain's spf.relay
// result, and its alignment with the author domain under aspf.
func (ev *evaluation) spfHalf(ctx context.Context, author string, pol dmarcDiscovery) (spfFacts, error) {
	f := spfFacts{domain: ev.sender.Domain}
	if len(ev.e.outboundSingles) == 0 {
		f.why = "outbound.ips holds no single address, so SPF cannot be judged here; this judges DKIM alone"
		return f, nil
	}
	r := ev.envelope.Check(SPFRelay)
	switch r.Status {
	case StatusSkip:
		f.why = fmt.Sprintf("spf.relay is not judged for %s (%s); this judges DKIM alone", f.domain, r.Detail)
		return f, nil
	case StatusTempError:
		f.judged, f.unknown = true, true
		f.why = fmt.Sprintf("SPF of the envelope domain %s could not be evaluated (spf.relay=temperror)", f.domain)
		return f, nil
	}
	f.judged = true
	if r.Status != StatusPass {
		f.why = fmt.Sprintf("SPF of the envelope domain %s does not pass for this relay (spf.relay=%s)", f.domain, r.Status)
		return f, nil
	}
	f.passes = true
	mode := dmarc.AlignmentMode(dmarc.AlignmentRelaxed)
	if pol.record != nil && pol.record.SPFAlignment != "" {
		mode = pol.record.SPFAlignment
	}
	aligned, err := ev.aligned(ctx, author, f.domain, mode, pol.org)
	if err != nil {
		return f, err
	}
	f.aligned = aligned
	if !aligned {
		f.why = fmt.Sprintf("SPF passes for the envelope domain %s, which does not align with %s (aspf=%s)", f.domain, author, mode)
	}
	return f, nil
}
