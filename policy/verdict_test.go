package policy

import (
	"net/netip"
	"testing"
)

func results(statuses map[CheckID]Status) []Result {
	var rs []Result
	for _, id := range CheckIDs() {
		st, ok := statuses[id]
		if !ok {
			st = StatusPass
		}
		rs = append(rs, Result{ID: id, Status: st})
	}
	return rs
}

func TestDecide(t *testing.T) {
	client := netip.MustParseAddr("192.0.2.7")
	cases := []struct {
		name    string
		policy  func(*Policy)
		in      map[CheckID]Status
		verdict Verdict
		cause   CheckID
		temp    bool
		byTemp  bool
	}{
		{"all pass", nil, nil, Pass, "", false, false},
		{"skips are nothing", nil, map[CheckID]Status{MXRecords: StatusSkip, ClientPTR: StatusSkip}, Pass, "", false, false},
		{"fail maps to its action", nil, map[CheckID]Status{MXPort25: StatusFail}, Defer, MXPort25, false, false},
		{"strongest wins", nil, map[CheckID]Status{ClientPTR: StatusFail, DomainSyntax: StatusFail, MXPort25: StatusFail}, Reject, DomainSyntax, false, false},
		{"warn at most flags", nil, map[CheckID]Status{MXPort25: StatusWarn}, Flag, MXPort25, false, false},
		{"warn of an ignored check", func(p *Policy) { p.Actions[HELOMatchesPTR] = Pass }, map[CheckID]Status{HELOMatchesPTR: StatusWarn}, Pass, "", false, false},
		{"fail ignored", func(p *Policy) { p.Actions[MXPort25] = Pass }, map[CheckID]Status{MXPort25: StatusFail}, Pass, "", false, false},
		{"hold", func(p *Policy) { p.Actions[ClientFCrDNS] = Hold }, map[CheckID]Status{ClientFCrDNS: StatusFail, ClientPTR: StatusFail}, Hold, ClientFCrDNS, false, false},
		{"temperror accepted", nil, map[CheckID]Status{MXRecords: StatusTempError}, Pass, "", true, false},
		{"temperror deferred", func(p *Policy) { p.OnTempError = Defer }, map[CheckID]Status{MXRecords: StatusTempError}, Defer, MXRecords, true, true},
		{"temperror never rejects", func(p *Policy) { p.OnTempError = Reject }, map[CheckID]Status{MXRecords: StatusTempError}, Pass, "", true, false},
		{"a real defer beats a temperror defer", func(p *Policy) { p.OnTempError = Defer },
			map[CheckID]Status{MXRecords: StatusTempError, ClientPTR: StatusFail, MXPort25: StatusFail}, Defer, MXPort25, true, false},
		{"reject beats temperror defer", func(p *Policy) { p.OnTempError = Defer },
			map[CheckID]Status{MXRecords: StatusTempError, DomainSyntax: StatusFail}, Reject, DomainSyntax, true, false},
		{"allowed domain", func(p *Policy) { p.AllowDomains = []string{"example.com"} },
			map[CheckID]Status{MXPort25: StatusFail, ClientPTR: StatusFail}, Flag, ClientPTR, false, false},
		{"allowed client network", func(p *Policy) { p.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} },
			map[CheckID]Status{ClientPTR: StatusFail}, Pass, "", false, false},
	}
	for _, c := range cases {
		p := defaultPolicy()
		if c.policy != nil {
			c.policy(&p)
		}
		rs := results(c.in)
		d := p.Decide("mail.example.com", client, rs)
		cause := CheckID("")
		if d.Cause >= 0 {
			cause = rs[d.Cause].ID
		}
		if d.Verdict != c.verdict || cause != c.cause || d.TempError != c.temp || d.ByTempError != c.byTemp {
			t.Errorf("%s: got %s cause %q temp %v byTemp %v; want %s cause %q temp %v byTemp %v",
				c.name, d.Verdict, cause, d.TempError, d.ByTempError, c.verdict, c.cause, c.temp, c.byTemp)
		}
	}
}

func TestAllowLists(t *testing.T) {
	p := Policy{AllowDomains: []string{"example.com"}, AllowMXHosts: []string{"mx.example.net"}}
	for d, want := range map[string]bool{"example.com": true, "mail.example.com": true, "badexample.com": false, "example.co": false} {
		if p.DomainAllowed(d) != want {
			t.Errorf("DomainAllowed(%q) = %v", d, !want)
		}
	}
	if !p.MXHostAllowed("mx.example.net") || p.MXHostAllowed("mx2.example.net") {
		t.Error("MXHostAllowed")
	}
	if p.ClientAllowed(netip.Addr{}) {
		t.Error("the invalid address is allowed")
	}
}

func TestParseAction(t *testing.T) {
	for s, want := range map[string]Verdict{"ignore": Pass, "flag": Flag, "hold": Hold, "defer": Defer, "reject": Reject} {
		if v, err := ParseAction(s); err != nil || v != want {
			t.Errorf("ParseAction(%q) = %v, %v", s, v, err)
		}
	}
	if _, err := ParseAction("pass"); err == nil {
		t.Error(`"pass" is not an action`)
	}
}
