package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Verdict is what should happen to a message; it doubles as the action a
// policy assigns to a failing check. Stronger verdicts compare greater.
type Verdict uint8

// The verdicts, weakest first (README, Verdicts: pass < flag < hold < defer < reject).
const (
	Pass Verdict = iota
	Flag
	Hold
	Defer
	Reject
)

var verdictNames = [...]string{Pass: "pass", Flag: "flag", Hold: "hold", Defer: "defer", Reject: "reject"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", v)
}

// MarshalText encodes the verdict by the name reports and the README use.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// ParseAction parses a policy action: ignore, flag, hold, defer or reject.
func ParseAction(s string) (Verdict, error) {
	switch s {
	case "ignore":
		return Pass, nil
	case "flag":
		return Flag, nil
	case "hold":
		return Hold, nil
	case "defer":
		return Defer, nil
	case "reject":
		return Reject, nil
	}
	return Pass, fmt.Errorf("unknown action %q (want ignore, flag, hold, defer or reject)", s)
}

// DefaultActions is each check's action for a failure, as its file declares it.
func DefaultActions() map[CheckID]Verdict {
	actions := make(map[CheckID]Verdict, len(checks))
	for _, c := range checks {
		actions[c.id] = c.action
	}
	return actions
}

// Policy maps check results to a verdict.
type Policy struct {
	// Actions is the action per failing check; a missing check means ignore.
	Actions map[CheckID]Verdict
	// OnTempError is Pass (accept) or Defer; anything else counts as Pass.
	OnTempError Verdict
	// AllowDomains exempts sender domains (and their subdomains) from domain checks.
	AllowDomains []string
	// AllowNetworks exempts clients from the sending-host checks.
	AllowNetworks []netip.Prefix
	// AllowMXHosts are MX host names trusted to accept mail; they are not probed.
	AllowMXHosts []string
	// ReportOnly is policy.mode: report. Verdicts are decided as usual, but
	// front ends refuse and hold nothing: every message gets the header
	// with the verdict enforcement would have applied, and "mode=report".
	ReportOnly bool
}

// Mode names the policy mode: "enforce" or "report".
func (p *Policy) Mode() string {
	if p.ReportOnly {
		return "report"
	}
	return "enforce"
}

// defaultPolicy is the README's default (Verdicts): default actions, accept
// on temperror.
func defaultPolicy() Policy {
	return Policy{Actions: DefaultActions(), OnTempError: Pass}
}

// Decision is a verdict and why.
type Decision struct {
	Verdict Verdict
	// Cause is the index in the results of the check that set the verdict, or -1.
	Cause int
	// TempError is set when some check could not finish (temperror).
	TempError bool
	// ByTempError is set when the verdict comes from OnTempError.
	ByTempError bool
}

// Decide applies the policy to the results of one evaluation. It is a pure
// function: same inputs, same decision.
func (p *Policy) Decide(domain string, client netip.Addr, results []Result) Decision {
	d := Decision{Cause: -1}
	domainAllowed := p.DomainAllowed(domain)
	clientAllowed := p.ClientAllowed(client)
	for i, r := range results {
		// The message checks go by the author domain, which their gate
		// holds against the allow-list itself.
		if r.ID.AboutDomain() && domainAllowed || !r.ID.AboutDomain() && !r.ID.AboutMessage() && clientAllowed {
			continue
		}
		var v Verdict
		byTemp := false
		switch r.Status {
		case StatusFail:
			v = p.Actions[r.ID]
		case StatusWarn:
			v = min(p.Actions[r.ID], Flag) // README, Verdicts: a warning at most flags
		case StatusTempError:
			d.TempError = true
			if p.OnTempError == Defer && !r.ownBound { // never reject on a temporary error
				v, byTemp = Defer, true
			}
		}
		// On a tie a real finding beats a temperror: the reply should name it.
		if v > d.Verdict || v == d.Verdict && v > Pass && d.ByTempError && !byTemp {
			d.Verdict, d.Cause, d.ByTempError = v, i, byTemp
		}
	}
	return d
}

// DomainAllowed reports whether domain or a parent of it is in AllowDomains.
func (p *Policy) DomainAllowed(domain string) bool {
	for _, a := range p.AllowDomains {
		if domain == a || strings.HasSuffix(domain, "."+a) {
			return true
		}
	}
	return false
}

// ClientAllowed reports whether ip lies in AllowNetworks.
func (p *Policy) ClientAllowed(ip netip.Addr) bool {
	return ip.IsValid() && inPrefixes(ip, p.AllowNetworks)
}

// MXHostAllowed reports whether host is in AllowMXHosts.
func (p *Policy) MXHostAllowed(host string) bool {
	for _, a := range p.AllowMXHosts {
		if host == a {
			return true
		}
	}
	return false
}
