package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMSignature is the check that the message carries a DKIM signature
// that verifies as the message leaves.
const DKIMSignature CheckID = "dkim.signature"

// Receivers authenticate the message by its DKIM signatures (RFC 6376);
// Gmail, Yahoo and Outlook.com want every message signed. The milter sees
// the message after the relay's signer, so a signature broken by a later
// change shows here before a receiver sees it.
var dkimSignature = check{
	id:           DKIMSignature,
	chain:        chainMessage,
	aboutMessage: true,
	what:         "the message carries a DKIM signature that verifies over the message as it leaves, verified with emersion/go-msgauth",
	failWhen:     "no signature, or none verifies (body hash, signature, key missing or revoked `p=`)",
	warnWhen:     "some signatures fail but one verifies",
	rfc:          "RFC 6376",
	action:       Flag,
	fix:          "Sign outgoing mail on this relay with a DKIM signer placed before mxguard (OpenDKIM or rspamd, first in smtpd_milters), and publish its key at SELECTOR._domainkey.DOMAIN.",
	gate:         message,
	run:          checkDKIMSignature,
}

func checkDKIMSignature(_ context.Context, ev *evaluation) Result {
	m := ev.msg
	if m.unverifiable != "" {
		return m.unverified()
	}
	if m.verifyErr != nil && !errors.Is(m.verifyErr, dkim.ErrTooManySignatures) {
		return Result{Status: StatusTempError, Detail: "the message could not be read for verification: " + Printable(m.verifyErr.Error(), 160)}
	}
	sigs := ev.signatures()
	if len(sigs) == 0 {
		return Result{Status: StatusFail, Detail: "the message carries no DKIM signature: receivers that require one (Gmail, Yahoo, Outlook.com) junk or refuse it"}
	}
	var good, bad, temp []string
	var first signatureFacts
	for _, s := range sigs {
		switch {
		case s.err == nil:
			good = append(good, s.String())
		case dkim.IsTempFail(s.err):
			temp = append(temp, fmt.Sprintf("%s: %s", s, reason(s.err)))
		default:
			if len(bad) == 0 {
				first = s
			}
			bad = append(bad, fmt.Sprintf("%s: %s", s, reason(s.err)))
		}
	}
	more := ""
	if errors.Is(m.verifyErr, dkim.ErrTooManySignatures) {
		more = fmt.Sprintf(" (the first %d signatures verified, the rest not)", maxSignatures)
	}
	switch {
	case len(good) > 0 && len(bad) == 0 && len(temp) == 0:
		return Result{Status: StatusPass, Detail: "verifies: " + strings.Join(good, ", ") + more}
	case len(good) > 0:
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("%s verifies, but not %s%s", strings.Join(good, ", "), strings.Join(append(bad, temp...), "; "), more)}
	case len(temp) > 0:
		return Result{Status: StatusTempError, Detail: "no signature could be verified: " + strings.Join(append(temp, bad...), "; ")}
	}
	r := Result{Status: StatusFail, Host: first.keyName(), Detail: "no DKIM signature verifies: " + strings.Join(bad, "; ") + more}
	r.fix = signatureFix(first)
	return r
}

// signatureFix says what to change for the first signature that fails.
func signatureFix(s signatureFacts) string {
	msg := s.err.Error()
	switch {
	case strings.Contains(msg, "no key for signature"), strings.Contains(msg, "no valid key found"):
		return fmt.Sprintf("Publish the signer's key at %s (a TXT record \"v=DKIM1; k=rsa; p=...\"), or sign with a selector that is published.", s.keyName())
	case strings.Contains(msg, "key revoked"):
		return fmt.Sprintf("The key at %s is revoked (empty p=): configure the signer with the current key and selector.", s.keyName())
	case strings.Contains(msg, "body hash did not verify"), strings.Contains(msg, "signature did not verify"):
		return "The message was changed after it was signed: sign last, after every filter that changes the message (put the signer after them, right before mxguard), and never sign with l=."
	case strings.Contains(msg, "too short"):
		return fmt.Sprintf("The key at %s is shorter than 1024 bits, which receivers ignore: make a 2048-bit key (opendkim-genkey -b 2048) and publish it under a new selector.", s.keyName())
	}
	return fmt.Sprintf("Make the signer's signature for d=%s verify: check its key at %s and its configuration.", Printable(s.domain, 80), s.keyName())
}

// reason is a verification error without go-msgauth's prefix.
func reason(err error) string { return Printable(strings.TrimPrefix(err.Error(), "dkim: "), 160) }
