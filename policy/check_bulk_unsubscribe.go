package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// BulkUnsubscribe is the check that bulk mail offers one-click unsubscribe.
const BulkUnsubscribe CheckID = "bulk.unsubscribe"

// Gmail and Yahoo (2024) require bulk senders to offer one-click
// unsubscribe (RFC 8058): an https List-Unsubscribe URI, the
// List-Unsubscribe-Post field, both covered by an aligned DKIM signature.
var bulkUnsubscribe = check{
	id:           BulkUnsubscribe,
	chain:        chainMessage,
	aboutMessage: true,
	what:         "bulk mail (it has `List-Id`, `List-Unsubscribe`, or `Precedence: bulk` or `list`, or a header named in `checks.bulk_headers`) offers one-click unsubscribe: `List-Unsubscribe` with an `https:` URI, `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, both covered by the `h=` of a verifying aligned DKIM signature",
	failWhen:     "bulk and any of these missing",
	rfc:          "RFC 8058",
	action:       Flag,
	fix:          "Add \"List-Unsubscribe: <https://...>\" and \"List-Unsubscribe-Post: List-Unsubscribe=One-Click\" to bulk mail, and have the signer include both in h= (OpenDKIM SignHeaders).",
	gate:         authoredMessage,
	run:          checkBulkUnsubscribe,
}

func checkBulkUnsubscribe(ctx context.Context, ev *evaluation) Result {
	m := ev.msg
	if m.unverifiable != "" {
		return m.unverified()
	}
	marker := ev.bulkMarker()
	if marker == "" {
		return skip("not bulk mail (no List-Id, List-Unsubscribe, Precedence: bulk or list, or checks.bulk_headers field)")
	}
	var missing []string
	https := false
	for _, v := range m.Header("List-Unsubscribe") {
		for _, uri := range strings.Split(v, ",") {
			uri = strings.TrimSpace(uri)
			https = https || strings.HasPrefix(strings.ToLower(strings.TrimPrefix(uri, "<")), "https:")
		}
	}
	if !https {
		missing = append(missing, "a List-Unsubscribe field with an https: URI")
	}
	post := m.Header("List-Unsubscribe-Post")
	if len(post) != 1 || post[0] != "List-Unsubscribe=One-Click" {
		missing = append(missing, "List-Unsubscribe-Post: List-Unsubscribe=One-Click")
	}
	aligned, err := ev.alignedSignatures(ctx)
	if err != nil {
		return Result{Status: StatusTempError, Detail: "finding the aligned DKIM signatures: " + err.Error()}
	}
	covered := slices.ContainsFunc(aligned, func(s signatureFacts) bool {
		return signs(s, "List-Unsubscribe") && signs(s, "List-Unsubscribe-Post")
	})
	if !covered {
		if len(missing) == 0 && slices.ContainsFunc(ev.signatures(), func(s signatureFacts) bool { return dkim.IsTempFail(s.err) }) {
			return Result{Status: StatusTempError, Detail: "bulk mail with one-click unsubscribe, but a DKIM signature could not be verified here (temporary error): whether it covers both fields is unknown"}
		}
		missing = append(missing, fmt.Sprintf("a verifying DKIM signature aligned with %s whose h= covers both fields", ev.author().domain))
	}
	if len(missing) > 0 {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("bulk mail (%s) without one-click unsubscribe: it lacks %s; Gmail and Yahoo refuse or junk such mail from bulk senders", marker, strings.Join(missing, "; "))}
	}
	return Result{Status: StatusPass, Detail: fmt.Sprintf("bulk mail (%s) offers one-click unsubscribe, signed", marker)}
}

// bulkMarker names the field that makes the message bulk mail ("" none).
func (ev *evaluation) bulkMarker() string {
	m := ev.msg
	for _, name := range append([]string{"List-Id", "List-Unsubscribe"}, ev.e.cfg.Message.BulkHeaders...) {
		if len(m.Header(name)) > 0 {
			return name
		}
	}
	for _, v := range m.Header("Precedence") {
		if p := strings.ToLower(v); p == "bulk" || p == "list" {
			return "Precedence: " + p
		}
	}
	return ""
}

// signs says whether the signature's h= names the field.
func signs(s signatureFacts, field string) bool {
	return slices.ContainsFunc(s.headerKeys, func(k string) bool { return strings.EqualFold(k, field) })
}
