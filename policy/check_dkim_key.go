package policy

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// DKIMKey is the check that the keys of the message's DKIM signatures are
// strong enough for receivers.
const DKIMKey CheckID = "dkim.key"

// RFC 8301 section 3.2: verifiers must not accept RSA keys below 1024
// bits, and signers should use 2048 (Gmail's guidance too).
var dkimKey = check{
	id:           DKIMKey,
	chain:        chainMessage,
	aboutMessage: true,
	what:         "the key of every verifying signature: RSA of at least 1024 bits (receivers treat less as no signature), ed25519 of 32 bytes, `v=DKIM1`",
	failWhen:     "a key below 1024 bits",
	warnWhen:     "RSA below 2048 bits (Gmail recommends 2048)",
	rfc:          "RFC 8301",
	action:       Flag,
	fix:          "Make a 2048-bit RSA key (opendkim-genkey -b 2048 -s NEWSELECTOR), publish it at NEWSELECTOR._domainkey.DOMAIN, switch the signer to it, and remove the old record once no mail in flight uses it.",
	gate:         message,
	run:          checkDKIMKey,
	memo:         &dkimKeyMemo,
}

// dkimKeyMemo remembers each key record's judgement: one parse per key,
// not per message.
var dkimKeyMemo memo

// keyJudgement is what judgeKey says of a key record.
type keyJudgement struct {
	status Status
	detail string
}

const (
	minRSABits  = 1024
	goodRSABits = 2048
)

func checkDKIMKey(ctx context.Context, ev *evaluation) Result {
	if ev.msg.unverifiable != "" {
		return ev.msg.unverified()
	}
	worst := Result{Status: StatusSkip, Detail: "no signature with a published key to judge"}
	var judged []string
	for _, s := range ev.signatures() {
		if s.err != nil && !keyRefused(s.err) {
			continue // a signature broken otherwise says nothing of its key
		}
		txts, ok := ev.msg.keyRecord(s.keyName())
		if !ok || len(txts) != 1 {
			continue // no key, or several: dkim.signature says so
		}
		j := recall(ctx, ev, &dkimKeyMemo, txts[0], func(context.Context) (keyJudgement, bool) {
			status, detail := judgeKey(txts[0])
			return keyJudgement{status, detail}, false
		})
		status, detail := j.status, j.detail
		if status == StatusSkip {
			continue
		}
		judged = append(judged, fmt.Sprintf("%s: %s", s, detail))
		if status > worst.Status || worst.Status == StatusSkip {
			worst = Result{Status: status, Host: s.keyName(), Detail: fmt.Sprintf("%s: %s", s.keyName(), detail)}
		}
	}
	if worst.Status == StatusPass {
		worst.Detail = strings.Join(judged, ", ")
	}
	return worst
}

// keyRefused says the verifier refused the signature for its key alone:
// too short (RFC 8301), not v=DKIM1, an ed25519 key of the wrong size.
// Those keys are judged with the keys of verifying signatures.
func keyRefused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "key is too short") || strings.Contains(msg, "incompatible public key version") ||
		strings.Contains(msg, "invalid Ed25519 public key size")
}

// judgeKey judges one key record's key; skip for a revoked or unreadable
// one, which dkim.signature reports.
func judgeKey(record string) (Status, string) {
	tags := map[string]string{}
	for _, part := range strings.Split(record, ";") {
		k, v, _ := strings.Cut(part, "=")
		tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return StatusFail, fmt.Sprintf("the key record says v=%s, not v=DKIM1; receivers ignore it", Printable(v, 20))
	}
	raw, err := base64.StdEncoding.DecodeString(tags["p"])
	if err != nil || len(raw) == 0 {
		return StatusSkip, ""
	}
	switch tags["k"] {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			pub, err = x509.ParsePKCS1PublicKey(raw) // RFC 6376 erratum 3017 allows both forms
		}
		key, ok := pub.(*rsa.PublicKey)
		if err != nil || !ok {
			return StatusSkip, ""
		}
		bits := key.N.BitLen()
		switch {
		case bits < minRSABits:
			return StatusFail, fmt.Sprintf("RSA key of %d bits: receivers treat a key below %d bits as no signature (RFC 8301 section 3.2)", bits, minRSABits)
		case bits < goodRSABits:
			return StatusWarn, fmt.Sprintf("RSA key of %d bits: receivers accept it, but %d bits are recommended (RFC 8301, Gmail)", bits, goodRSABits)
		}
		return StatusPass, fmt.Sprintf("RSA %d bits", bits)
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return StatusFail, fmt.Sprintf("ed25519 key of %d bytes, not %d (RFC 8463)", len(raw), ed25519.PublicKeySize)
		}
		return StatusPass, "ed25519"
	}
	return StatusFail, fmt.Sprintf("key type k=%s, which receivers do not know", Printable(tags["k"], 20))
}
