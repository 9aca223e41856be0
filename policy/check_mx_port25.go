package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// MXPort25 is the check that the MX hosts accept SMTP on port 25.
const MXPort25 CheckID = "mx.port25"

// Any well-formed greeting, even 554, proves an SMTP server; timeouts and
// errors that say the path from here is broken are inconclusive.
var mxPort25 = check{
	id:          MXPort25,
	chain:       chainMX,
	aboutDomain: true,
	what:        "each usable MX address (preference order, capped) accepts TCP on port 25 and greets with SMTP; any well-formed reply code (`220`, `554`, `421`) proves an SMTP server, even when the greeting then runs long, is cut off or stalls",
	failWhen:    "every probed host refused or spoke something else",
	warnWhen:    "some hosts did",
	rfc:         "RFC 5321 sections 3.1 and 4.2",
	action:      Defer,
	fix:         "Make every MX host accept SMTP on port {port} from the Internet (check firewalls and that the mail server listens on a public address), or remove hosts that do not receive mail from the MX records.",
	gate:        probedMX,
	run:         checkMXPort25,
}

// hostProbes is one MX host and the probes of its addresses.
type hostProbes struct {
	host   string
	addrs  []netip.Addr
	probes []probeResult
}

// speaks reports that some address greeted with SMTP.
func (h hostProbes) speaks() bool {
	for _, p := range h.probes {
		if p.Outcome.SpeaksSMTP() {
			return true
		}
	}
	return false
}

// noSMTP reports that every address conclusively has no SMTP server.
func (h hostProbes) noSMTP() bool {
	for _, p := range h.probes {
		if !p.Outcome.NoSMTP() {
			return false
		}
	}
	return len(h.probes) > 0
}

// worst is the address that makes the host look worst.
func (h hostProbes) worst() (netip.Addr, probeResult) {
	for i, p := range h.probes {
		if !p.Outcome.SpeaksSMTP() {
			return h.addrs[i], p
		}
	}
	return h.addrs[0], h.probes[0]
}

func checkMXPort25(ctx context.Context, ev *evaluation) Result {
	results := ev.probeResults(ctx)
	var hosts []hostProbes
	allowed := 0
	for _, t := range ev.probedTargets(ctx) {
		if t.allowed {
			allowed++
			continue
		}
		h := hostProbes{host: t.Host}
		for _, ip := range t.addrs {
			if r, ok := results[ip]; ok {
				h.addrs = append(h.addrs, ip)
				h.probes = append(h.probes, r)
			}
		}
		hosts = append(hosts, h)
	}
	var undecided *target // a target whose lookup failed: it might be the one that works
	for _, t := range ev.mxTargets(ctx) {
		if t.undecided() {
			undecided = &t
			break
		}
	}
	port := ev.e.cfg.Probe.Port
	var speaking, refusing, unsure []hostProbes
	for _, h := range hosts {
		switch {
		case h.speaks():
			speaking = append(speaking, h)
		case h.noSMTP():
			refusing = append(refusing, h)
		default:
			unsure = append(unsure, h)
		}
	}
	total := len(hosts) + allowed
	good := len(speaking) + allowed
	switch {
	case good > 0 && len(refusing) > 0:
		ip, _ := refusing[0].worst()
		return Result{Status: StatusWarn, Host: refusing[0].host, IP: ip,
			Detail: fmt.Sprintf("%d of %d MX hosts do not accept SMTP on port %d: %s", len(refusing), total, port, describeHosts(refusing))}
	case good > 0:
		detail := fmt.Sprintf("%d of %d MX hosts greet on port %d", good, total, port)
		if len(speaking) > 0 {
			detail += ": " + describeHosts(speaking)
		}
		if len(unsure) > 0 {
			detail += "; inconclusive: " + describeHosts(unsure)
		}
		return Result{Status: StatusPass, Detail: detail}
	case len(unsure) == 0 && undecided == nil:
		ip, _ := refusing[0].worst()
		return Result{Status: StatusFail, Host: refusing[0].host, IP: ip,
			Detail: fmt.Sprintf("no MX host accepts SMTP on port %d: %s", port, describeHosts(refusing))}
	case len(unsure) == 0:
		return Result{Status: StatusTempError, Host: undecided.Host,
			Detail: fmt.Sprintf("no probed MX host accepts SMTP on port %d (%s), and %s did not resolve: %v",
				port, describeHosts(refusing), undecided.Host, undecided.temp)}
	}
	ip, _ := unsure[0].worst()
	var unsureAddrs []netip.Addr
	for _, h := range unsure {
		unsureAddrs = append(unsureAddrs, h.addrs...)
	}
	readVolatile(ctx)
	if blocked, why := ev.e.raw.egress.blocked(unsureAddrs); blocked {
		return Result{Status: StatusSkip, Host: unsure[0].host, IP: ip, Detail: why}
	}
	return Result{Status: StatusTempError, Host: unsure[0].host, IP: ip,
		Detail: fmt.Sprintf("no MX host answered conclusively on port %d: %s", port, describeHosts(append(refusing, unsure...)))}
}

// describeHosts lists hosts with the probe of their most telling address.
func describeHosts(hs []hostProbes) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		ip, p := h.worst()
		if h.speaks() {
			ip, p = h.best()
		}
		parts[i] = fmt.Sprintf("%s [%s] %s", h.host, ip, p.Summary())
	}
	return strings.Join(parts, "; ")
}

// best is the first address that greeted with SMTP.
func (h hostProbes) best() (netip.Addr, probeResult) {
	for i, p := range h.probes {
		if p.Outcome.SpeaksSMTP() {
			return h.addrs[i], p
		}
	}
	return h.worst()
}
