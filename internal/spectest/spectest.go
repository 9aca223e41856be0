// Package spectest is the sandbox behind mxguard's check-table tests: a zone
// with one domain or sending host per row of the table, and the statuses
// and verdicts each must produce (README, Checks and Verdicts). The engine,
// front-end and CLI tests all run it. A check with cases of its own keeps
// them, its domains and what a passing domain publishes for it in a
// fixture file here (fixture.go).
package spectest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// Sandbox addresses: every MX behaviour on its own loopback address.
const (
	ipAccept    = "127.0.1.1"
	ip554       = "127.0.1.2"
	IPRefused   = "127.0.1.3"
	ipSilent    = "127.0.1.4"
	ipNotSMTP   = "127.0.1.5"
	ipBlackhole = "127.0.1.6"
	ipSlow      = "127.0.1.7"
	ipMultiLine = "127.0.1.8"
	ipLongGreet = "127.0.1.9"  // 60 continuation lines, about 5 KB
	ipLongLine  = "127.0.1.10" // one 600-octet greeting line
	ipAccept6   = "::1"
	IPOutDual   = "127.0.2.1" // outbound IP that also accepts SMTP
	IPOutOnly   = "127.0.2.2" // outbound IP that does not
	ipOutOther  = "127.0.2.3" // outbound IP whose PTR names another host
)

// DNSBL is the sandbox's address blocklist (outbound.dnsbl_zones): it
// lists none of the sandbox's outbound addresses unless a test lists one.
const DNSBL = "dnsbl.bl.test"

const (
	ConnectTimeout  = 300 * time.Millisecond
	GreetingTimeout = 600 * time.Millisecond
)

// Sandbox builds the zone behind the check table: one domain (or client) per
// row, each MX behaviour on its own loopback address.
func Sandbox(t testing.TB) *smtptest.Sandbox {
	t.Helper()
	sb, err := smtptest.NewSandbox()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	for ip, b := range map[string]smtptest.Behavior{
		ipAccept:    smtptest.Accept,
		ip554:       smtptest.Greet554,
		ipSilent:    smtptest.Silent,
		ipNotSMTP:   smtptest.NotSMTP,
		ipBlackhole: smtptest.Blackhole,
		ipSlow:      smtptest.SlowGreeting(GreetingTimeout / 3),
		ipMultiLine: smtptest.Banner("220-multi.sandbox.test ESMTP\r\n220-policy text\r\n220 ready\r\n", 0),
		ipLongGreet: smtptest.Banner(strings.Repeat("220-long.sandbox.test: a legal notice that goes on and on, line after line\r\n", 60)+"220 ready\r\n", 0),
		ipLongLine:  smtptest.Banner("220 "+strings.Repeat("x", 596)+"\r\n", 0),
		ipAccept6:   smtptest.Accept,
		IPOutDual:   smtptest.Accept,
	} {
		if _, err := sb.Serve(ip, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, ip := range []string{IPRefused, IPOutOnly} {
		if err := sb.Closed(ip); err != nil {
			t.Fatal(err)
		}
	}
	z := sb.Zone
	z.A("mx.accept.test", ipAccept).A("mx.554.test", ip554).A("mx.refused.test", IPRefused).
		A("mx.silent.test", ipSilent).A("mx.notsmtp.test", ipNotSMTP).A("mx.blackhole.test", ipBlackhole).
		A("mx.slow.test", ipSlow).A("mx.multiline.test", ipMultiLine).A("mx6.accept.test", ipAccept6).
		A("mx.dual.test", IPOutDual).A("mx.outonly.test", IPOutOnly).
		A("mx.longgreeting.test", ipLongGreet).A("mx.longline.test", ipLongLine)
	z.MX("longgreeting.test", 10, "mx.longgreeting.test")
	z.MX("longline.test", 10, "mx.longline.test")
	z.MX("ab--cd.test", 10, "mx--01.ab--cd.test").A("mx--01.ab--cd.test", ipAccept)

	z.MX("ok.test", 10, "mx.accept.test").MX("ok.test", 20, "mx6.accept.test")
	z.MX("v6only.test", 10, "mx6.accept.test")
	z.MX("v4.test", 10, "mx.accept.test")
	z.CNAME("alias-domain.test", "ok.test")
	z.MX("nullmx.test", 0, ".")
	z.MX("mixednull.test", 0, ".").MX("mixednull.test", 10, "mx.accept.test")
	z.A("implicit.test", ipAccept)
	z.TXT("nomail.test", "v=spf1 -all")
	z.MX("servfail.test", 10, "mx.accept.test").A("servfail.test", ipAccept).SetFault("servfail.test", smtptest.ServFail)
	z.MX("cname-mx.test", 10, "alias.cname-mx.test").CNAME("alias.cname-mx.test", "mx.accept.test")
	z.MX("literal-mx.test", 10, ipAccept+".")
	z.MX("private-mx.test", 10, "mx.private-mx.test").A("mx.private-mx.test", "10.1.2.3", "169.254.169.254", "fd00::25")
	z.MX("ghost-mx.test", 10, "mx.ghost-mx.test")
	z.MX("noaddr-mx.test", 10, "mx.noaddr-mx.test").TXT("mx.noaddr-mx.test", "no address here")
	z.MX("mixed-targets.test", 10, "mx.accept.test").MX("mixed-targets.test", 20, "mx.ghost-mx.test")
	z.MX("target-servfail.test", 10, "mx.target-servfail.test").A("mx.target-servfail.test", ipAccept).
		SetFault("mx.target-servfail.test", smtptest.ServFail)
	z.MX("refused.test", 10, "mx.refused.test")
	z.MX("notsmtp.test", 10, "mx.notsmtp.test")
	z.MX("some-refused.test", 10, "mx.accept.test").MX("some-refused.test", 20, "mx.refused.test")
	z.MX("554.test", 10, "mx.554.test")
	z.MX("silent.test", 10, "mx.silent.test")
	z.MX("blackhole.test", 10, "mx.blackhole.test")
	z.MX("refused-and-silent.test", 10, "mx.refused.test").MX("refused-and-silent.test", 20, "mx.silent.test")
	z.MX("slow.test", 10, "mx.slow.test")
	z.MX("multiline.test", 10, "mx.multiline.test")
	z.MX("dual.test", 10, "mx.dual.test")
	z.MX("outonly.test", 10, "mx.outonly.test").MX("outonly.test", 20, "mx.accept.test")
	for i := 0; i < 8; i++ {
		z.MX("many.test", uint16(10+i), "mx.accept.test")
	}
	z.MX("many.test", 100, "mx.refused.test") // beyond probe.max_hosts: never probed
	for i := 0; i < 5; i++ {                  // the five most preferred are broken; the sixth works
		z.MX("capped.test", uint16(10+i), fmt.Sprintf("gone%d.capped.test", i))
	}
	z.MX("capped.test", 50, "mx.accept.test")
	z.MX("sf-special.test", 10, "mx.sf-special.test").A("mx.sf-special.test", "fd00::25").
		SetTypeFault("mx.sf-special.test", dns.TypeA, smtptest.ServFail)
	z.MX("partial.test", 10, "mx.target-servfail.test").MX("partial.test", 20, "mx.refused.test")
	z.MX("accept-and-silent.test", 10, "mx.accept.test").MX("accept-and-silent.test", 20, "mx.silent.test")

	// Every mail domain so far passes the checks whose cases live in files
	// of their own; those files add their domains next.
	Passing(z, append(z.Names(dns.TypeMX), "implicit.test")...)
	passingAlias(z, "alias-domain.test")
	for _, f := range fixtures {
		f.zone(z)
	}

	// The relay's own outbound addresses, for the egress self-check.
	z.PTR(IPOutDual, "relay.good.test").A("relay.good.test", IPOutDual)
	z.PTR(ipOutOther, "other.good.test").A("other.good.test", ipOutOther)

	// Sending hosts.
	z.PTR("127.0.3.1", "mail.good.test").A("mail.good.test", "127.0.3.1")
	z.PTR("127.0.3.3", "nofwd.good.test")
	z.PTR("127.0.3.4", "wrong.good.test", "right.good.test").A("wrong.good.test", "127.0.9.9").A("right.good.test", "127.0.3.4")
	z.PTR("127.0.3.5", "x.good.test").SetFault(reverse("127.0.3.5"), smtptest.ServFail)
	z.PTR("127.0.3.6", "sf.good.test").A("sf.good.test", "127.0.3.6").SetFault("sf.good.test", smtptest.ServFail)
	z.PTR("::1", "v6.good.test").A("v6.good.test", "::1")
	return sb
}

func reverse(ip string) string {
	r, _ := dns.ReverseAddr(ip)
	return r
}

// Config is the engine configuration for Sandbox: its resolver and port,
// loopback probing allowed, short timeouts, no identity skip networks.
func Config(sb *smtptest.Sandbox) policy.Config {
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Resolver.Timeout = 500 * time.Millisecond
	cfg.Probe.Port = sb.Port
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cfg.Probe.ConnectTimeout = ConnectTimeout
	cfg.Probe.GreetingTimeout = GreetingTimeout
	cfg.OutboundIPs = []netip.Prefix{netip.MustParsePrefix(IPOutDual + "/32"), netip.MustParsePrefix(IPOutOnly + "/32")}
	cfg.SkipIdentityNetworks = nil // the sandbox clients are all loopback
	cfg.DomainBlocklists = []policy.BlocklistZone{DomainBlocklist}
	return cfg
}

// Case is one row: a request and what the checks must say about it.
type Case struct {
	Name     string
	Sender   string
	ClientIP string // "" for none
	HELO     string
	// ClientName is the MTA's name for the client ({client_name}): a
	// milter session sends it, and it never changes what the checks say.
	ClientName string
	// Want lists the checks that do not pass, as id=status in report
	// order ("mx.port25=warn helo.matches-ptr=warn"); "" when all pass. A
	// check with a fixture says it in its own file for the rows it does
	// not hold (Expected).
	Want    string
	Verdict string
	Reply   string // the reply's code and enhanced code, for defer and reject
	Detail  string // a fragment the deciding (or first non-pass) check's detail contains
}

// Request is the engine request for the case: an address (with "@" or
// "<") is a sender, anything else a bare domain, as `mxguard check` reads them.
func (c Case) Request() policy.Request {
	r := policy.Request{HELO: c.HELO}
	if strings.ContainsAny(c.Sender, "@<") {
		r.Sender = c.Sender
	} else {
		r.Domain = c.Sender
	}
	if c.ClientIP != "" {
		r.ClientIP = netip.MustParseAddr(c.ClientIP)
	}
	return r
}

// Findings renders results the way Case.Want is written: every check
// that did not pass, as id=status, in report order.
func Findings(results []policy.Result) string {
	var parts []string
	for _, r := range results {
		if r.Status != policy.StatusPass {
			parts = append(parts, fmt.Sprintf("%s=%s", r.ID, r.Status))
		}
	}
	return strings.Join(parts, " ")
}

// Cases is the check table, row by row: every status of every check; the
// fixture files add their rows.
var Cases = []Case{
	{"all pass", "user@ok.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"bare domain, IDN-free, trailing dot, case", "OK.Test.", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"domain is a CNAME", "a@alias-domain.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"IPv6-only MX", "a@v6only.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"null sender", "<>", "127.0.3.1", "mail.good.test", "", DomainSkipped(""), "pass", "", ""},
	{"address literal domain", "a@[127.0.0.1]", "127.0.3.1", "mail.good.test", "", DomainSkipped("domain.syntax=fail"), "reject", "550 5.7.1", "address literal"},
	{"bad domain syntax", "a@bad_domain.test", "127.0.3.1", "mail.good.test", "", DomainSkipped("domain.syntax=fail"), "reject", "550 5.7.1", "bad_domain"},
	{"NXDOMAIN", "a@nx.test", "127.0.3.1", "mail.good.test", "", "mx.records=fail mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "NXDOMAIN"},
	{"null MX", "a@nullmx.test", "127.0.3.1", "mail.good.test", "", "mx.records=fail mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.27", "null MX"},
	{"null MX mixed", "a@mixednull.test", "127.0.3.1", "mail.good.test", "", "mx.records=fail mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.27", "mixes a null MX"},
	{"implicit MX", "a@implicit.test", "127.0.3.1", "mail.good.test", "", "mx.records=warn", "flag", "", "implicit MX"},
	{"no MX, no address", "a@nomail.test", "127.0.3.1", "mail.good.test", "", "mx.records=fail mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "no MX records and no A/AAAA"},
	{"MX SERVFAIL is not implicit MX", "a@servfail.test", "127.0.3.1", "mail.good.test", "", "mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "pass", "", "SERVFAIL"},
	{"MX target is a CNAME: followed, like MTAs do", "a@cname-mx.test", "127.0.3.1", "mail.good.test", "", "mx.targets=warn", "flag", "", "RFC 2181 section 10.3"},
	{"MX target is an IP literal", "a@literal-mx.test", "127.0.3.1", "mail.good.test", "", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "IP address"},
	{"MX target special-purpose", "a@private-mx.test", "127.0.3.1", "mail.good.test", "", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "169.254.169.254 (link-local"},
	{"MX target does not exist", "a@ghost-mx.test", "127.0.3.1", "mail.good.test", "", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "NXDOMAIN"},
	{"MX target has no address", "a@noaddr-mx.test", "127.0.3.1", "mail.good.test", "", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "defer", "451 4.7.1", "no A or AAAA"},
	{"some MX targets unusable", "a@mixed-targets.test", "127.0.3.1", "mail.good.test", "", "mx.targets=warn", "flag", "", "1 of 2 MX targets unusable"},
	{"MX target SERVFAIL", "a@target-servfail.test", "127.0.3.1", "mail.good.test", "", "mx.targets=temperror mx.port25=skip mx.outbound-ip=skip", "pass", "", "SERVFAIL"},
	{"MX refuses port 25", "a@refused.test", "127.0.3.1", "mail.good.test", "", "mx.port25=fail", "defer", "451 4.7.1", "connection refused"},
	{"MX is not SMTP", "a@notsmtp.test", "127.0.3.1", "mail.good.test", "", "mx.port25=fail", "defer", "451 4.7.1", "not an SMTP greeting"},
	{"some MX refuse", "a@some-refused.test", "127.0.3.1", "mail.good.test", "", "mx.port25=warn", "flag", "", "connection refused"},
	{"554 greeting is SMTP", "a@554.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"silent MX is inconclusive", "a@silent.test", "127.0.3.1", "mail.good.test", "", "mx.port25=temperror", "pass", "", "no greeting"},
	{"blackholed MX is inconclusive", "a@blackhole.test", "127.0.3.1", "mail.good.test", "", "mx.port25=temperror", "pass", "", "no answer to the TCP"},
	{"refused plus timeout is inconclusive", "a@refused-and-silent.test", "127.0.3.1", "mail.good.test", "", "mx.port25=temperror", "pass", "", "refused"},
	{"slow greeting within timeout", "a@slow.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"multi-line greeting", "a@multiline.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"60-line greeting beyond the read limit", "a@longgreeting.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"600-octet greeting line", "a@longline.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"'--' in a plain label (not xn--)", "a@ab--cd.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"outbound IP accepts (dual role)", "a@dual.test", "127.0.3.1", "mail.good.test", "", "mx.outbound-ip=warn", "flag", "", "dual role"},
	{"outbound-only IP as MX", "a@outonly.test", "127.0.3.1", "mail.good.test", "", "mx.port25=warn mx.outbound-ip=fail", "defer", "451 4.7.1", "outbound IP"},
	{"MX cap", "a@many.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"usable MX beyond the probe cap", "a@capped.test", "127.0.3.1", "mail.good.test", "", "mx.targets=warn", "flag", "", "5 of 6 MX targets unusable"},
	{"A SERVFAIL beside special-purpose AAAA", "a@sf-special.test", "127.0.3.1", "mail.good.test", "", "mx.targets=temperror mx.port25=skip mx.outbound-ip=skip", "pass", "", "SERVFAIL"},
	{"refusal beside an unresolved target", "a@partial.test", "127.0.3.1", "mail.good.test", "", "mx.port25=temperror", "pass", "", "did not resolve"},
	{"timeouts beside a greeting", "a@accept-and-silent.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
	{"unqualified sender", "<postmaster>", "127.0.3.1", "mail.good.test", "", DomainSkipped(""), "pass", "", ""},

	{"no client IP", "a@ok.test", "", "mail.good.test", "", "helo.syntax=skip client.ptr=skip client.fcrdns=skip helo.matches-ptr=skip", "pass", "", ""},
	{"no HELO", "a@v4.test", "127.0.3.1", "", "", "helo.syntax=skip helo.matches-ptr=skip", "pass", "", ""},
	{"HELO does not match PTR", "a@v4.test", "127.0.3.1", "other.good.test", "", "helo.matches-ptr=warn", "flag", "", "is not the forward-confirmed PTR name mail.good.test"},
	{"HELO case and trailing dot", "a@v4.test", "127.0.3.1", "MAIL.Good.Test.", "", "", "pass", "", ""},
	{"HELO with '--' in a plain label", "a@v4.test", "127.0.3.1", "mx--01.good.test", "", "helo.matches-ptr=warn", "flag", "", "HELO mx--01.good.test is not"},
	{"HELO single label", "a@v4.test", "127.0.3.1", "localhost", "", "helo.syntax=fail helo.matches-ptr=skip", "flag", "", "single label"},
	{"HELO bare IP", "a@v4.test", "127.0.3.1", "127.0.3.1", "", "helo.syntax=fail helo.matches-ptr=skip", "flag", "", "bare IP"},
	{"HELO bad syntax", "a@v4.test", "127.0.3.1", "mail_host.good.test", "", "helo.syntax=fail helo.matches-ptr=skip", "flag", "", "mail_host"},
	{"HELO literal of client", "a@v4.test", "127.0.3.1", "[127.0.3.1]", "", "helo.matches-ptr=warn", "flag", "", "address literal"},
	{"HELO literal not client", "a@v4.test", "127.0.3.1", "[127.0.0.9]", "", "helo.syntax=fail helo.matches-ptr=warn", "flag", "", "not the client address"},
	{"no PTR", "a@v4.test", "127.0.3.2", "mail.good.test", "", "client.ptr=fail client.fcrdns=skip helo.matches-ptr=skip", "flag", "", "no PTR"},
	{"PTR without forward", "a@v4.test", "127.0.3.3", "nofwd.good.test", "", "client.fcrdns=fail helo.matches-ptr=skip", "flag", "", "resolves back"},
	{"second PTR name confirms", "a@v4.test", "127.0.3.4", "right.good.test", "", "", "pass", "", ""},
	{"PTR SERVFAIL", "a@v4.test", "127.0.3.5", "x.good.test", "", "client.ptr=temperror client.fcrdns=skip helo.matches-ptr=skip", "pass", "", "SERVFAIL"},
	{"forward SERVFAIL", "a@v4.test", "127.0.3.6", "sf.good.test", "", "client.fcrdns=temperror helo.matches-ptr=skip", "pass", "", "SERVFAIL"},
	{"IPv6 client FCrDNS over AAAA", "a@v4.test", "::1", "v6.good.test", "", "", "pass", "", ""},
	{"IPv6 address literal HELO", "a@v4.test", "::1", "[IPv6:::1]", "", "helo.matches-ptr=warn", "flag", "", "address literal"},
	{"MTA's client name does not override DNS", "a@ok.test", "127.0.3.1", "relay.good.test", "relay.good.test", "helo.matches-ptr=warn", "flag", "", "is not the forward-confirmed PTR name mail.good.test"},
}
