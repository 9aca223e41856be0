package policy

import "context"

// check is one check: what it is and how it runs, declared together in its
// own check_*.go file. Adding a check is that file and a line in checks.
type check struct {
	id CheckID
	// aboutDomain says the check is about the sender domain (else the
	// sending host); allow-lists and the evaluation's two chains go by it.
	aboutDomain bool
	// aboutMessage says the check is about the message and its author
	// domain (RFC5322.From); it runs in EvaluateMessage alone.
	aboutMessage bool
	// chain is the sequence the check runs in: checks of one chain run in
	// order, building on each other's facts; chains run side by side.
	chain    chain
	what     string // what it checks, for the catalogue
	failWhen string // when it fails; "" if it never does
	warnWhen string // when it warns; "" if it never does
	rfc      string
	// action is what a failure does by default (policy.actions).
	action Verdict
	// enhanced is the RFC 3463 subject.detail of a refusal it causes ("7.1"
	// when empty); a result may name another (null MX: "7.27").
	enhanced string
	// fix says what the owner of the domain or host should change; {port}
	// stands for probe.port.
	fix string
	// gate says why the check does not apply to an evaluation ("" when it
	// does); it is not run then, and reports skip with that reason.
	gate func(ctx context.Context, ev *evaluation) string
	run  func(ctx context.Context, ev *evaluation) Result
	// memo, when set, is the memory run recalls what it works out from
	// DNS answers in (memo.go); the engine keeps it.
	memo *memo
}

type chain uint8

// The chains: the sender domain's mail exchangers (DNS, then probes), and
// the checks that need DNS alone (the sending host; the sender domain's SPF
// and DMARC), which so never wait for a probe. The message checks come
// after both, at the end of the message, on the envelope's report.
const (
	chainMX chain = iota
	chainDNS
	numChains
	chainMessage = numChains
)

// checks is the registry, in the order of reports and of the README's
// check table (generated from it).
var checks = []*check{
	&domainSyntax,
	&mxRecords,
	&mxTargets,
	&mxPort25,
	&mxOutboundIP,
	&heloSyntax,
	&clientPTR,
	&clientFCrDNS,
	&heloMatchesPTR,
	&spfRelay,
	&dmarcRecord,
	&domainBlocklist,
	&dkimSignature,
	&dkimKey,
	&dmarcAlignment,
	&bulkUnsubscribe,
}

var checkIndex = func() map[CheckID]*check {
	m := make(map[CheckID]*check, len(checks))
	for _, c := range checks {
		m[c.id] = c
	}
	return m
}()

// The gates the checks share.

// senderDomain applies to a sender domain that is valid and not allow-listed.
func senderDomain(_ context.Context, ev *evaluation) string { return ev.domainSkip() }

// mailExchangers applies where the domain has MX targets to examine.
func mailExchangers(ctx context.Context, ev *evaluation) string {
	if reason := ev.domainSkip(); reason != "" {
		return reason
	}
	return ev.mxSet(ctx).unusableReason()
}

// probedMX applies where some MX target can be probed.
func probedMX(ctx context.Context, ev *evaluation) string { return ev.probeSkip(ctx) }

// message applies to a message that is not a bounce, whose author domain
// (if it has one) is not allow-listed.
func message(_ context.Context, ev *evaluation) string { return ev.messageSkip() }

// authoredMessage is message, for a message with a From domain.
func authoredMessage(_ context.Context, ev *evaluation) string {
	if reason := ev.messageSkip(); reason != "" {
		return reason
	}
	if len(ev.msg.Header("From")) == 0 && ev.msg.unverifiable == "" {
		return "the message has no From field: no author domain to judge"
	}
	return ""
}

// sendingHost applies to an identity-checked client.
func sendingHost(_ context.Context, ev *evaluation) string { return ev.identitySkip }

// CheckInfo describes a check, for documentation and tools.
type CheckInfo struct {
	ID CheckID
	// Subject is "sender domain", "sending host" or "message".
	Subject                  string
	What, FailWhen, WarnWhen string
	RFC                      string
	Default                  Verdict
	Fix                      string
}

// Catalogue describes every check, in report order.
func Catalogue() []CheckInfo {
	infos := make([]CheckInfo, len(checks))
	for i, c := range checks {
		subject := "sending host"
		switch {
		case c.aboutDomain:
			subject = "sender domain"
		case c.aboutMessage:
			subject = "message"
		}
		infos[i] = CheckInfo{c.id, subject, c.what, c.failWhen, c.warnWhen, c.rfc, c.action, c.fix}
	}
	return infos
}

func skip(detail string) Result { return Result{Status: StatusSkip, Detail: detail} }

func temperror(err error) Result { return Result{Status: StatusTempError, Detail: err.Error()} }
