package policy

import (
	"context"
	"fmt"
	"net/netip"
)

// EgressDNSBL is the egress self-check's lookup of the relay's own
// addresses in outbound.dnsbl_zones. It judges no mail: the self-check
// reports it (check --self, serve's log and metrics) beside the host checks.
const EgressDNSBL CheckID = "egress.dnsbl"

// egressDNSBLAction is what a listing makes of a self-check report: flag,
// as for the host checks (check --self exits 1).
const egressDNSBLAction = Flag

// checkEgressDNSBL looks ip up in every zone of outbound.dnsbl_zones
// (RFC 5782: reversed octets for IPv4, reversed nibbles for IPv6).
func (e *Engine) checkEgressDNSBL(ctx context.Context, ip netip.Addr) (Result, []ZoneAnswer) {
	zones := e.cfg.DNSBLZones
	if len(zones) == 0 {
		r := skip("outbound.dnsbl_zones names no zone")
		r.ID, r.IP = EgressDNSBL, ip
		return r, nil
	}
	test := notListed4
	if ip.Is6() {
		test = notListed6
	}
	answers := e.askZones(ctx, zones, reversed(ip), test)
	r := blocklistResult(ip.String(), answers)
	r.ID, r.IP = EgressDNSBL, ip
	if r.Status == StatusFail {
		r.fix = fmt.Sprintf(listingFix, listedIn(answers), ip) +
			" Until it is delisted, receivers that use the list refuse or junk this relay's mail."
	}
	return r, answers
}
