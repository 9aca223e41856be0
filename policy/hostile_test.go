package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// hostileSandbox serves zones built to hurt: huge MX sets, CNAME loops and
// chains, MX hosts on addresses that must never be probed, and DNS faults.
func hostileSandbox(t *testing.T) (*smtptest.Sandbox, *smtptest.SMTPServer) {
	t.Helper()
	sb, err := smtptest.NewSandbox()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	// A real SMTP server on loopback, which only probe.allow_networks may reach.
	local, err := sb.Serve("127.0.10.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	z := sb.Zone
	for i := 0; i < 400; i++ {
		z.MX("huge.test", uint16(i), fmt.Sprintf("mx%03d.huge.test", i))
	}
	for i := 0; i < 20; i++ { // a long chain: c0 -> c1 -> ... -> c19 -> address
		z.CNAME(fmt.Sprintf("c%d.chain.test", i), fmt.Sprintf("c%d.chain.test", i+1))
	}
	z.A("c20.chain.test", "192.0.2.1")
	z.MX("chain.test", 10, "c0.chain.test")
	z.CNAME("l1.loop.test", "l2.loop.test").CNAME("l2.loop.test", "l1.loop.test").MX("loop.test", 10, "l1.loop.test")
	z.CNAME("loopdomain.test", "loopdomain2.test").CNAME("loopdomain2.test", "loopdomain.test")
	internal := map[string]string{
		"loopback":  "127.0.10.1",
		"rfc1918":   "10.1.2.3",
		"cgnat":     "100.64.0.1",
		"linklocal": "fe80::1",
		"ula":       "fd12:3456::25",
		"metadata":  "169.254.169.254",
		"mapped":    "::ffff:10.0.0.1",
	}
	for name, ip := range internal {
		z.MX(name+".test", 10, "mx."+name+".test").A("mx."+name+".test", ip)
	}
	z.MX("trunc.test", 10, "mx.trunc.test").A("mx.trunc.test", "192.0.2.2").SetFault("trunc.test", smtptest.Truncate)
	z.MX("wrongid.test", 10, "mx.accept.test").SetFault("wrongid.test", smtptest.WrongID)
	z.MX("slow.test", 10, "mx.accept.test").SetFault("slow.test", smtptest.Delay(5*time.Second))
	z.MX("refused.test", 10, "mx.accept.test").SetFault("refused.test", smtptest.Refused)
	// Nothing wrong but an unprobed MX target: what every check on the
	// domain's own records says where the zone leaves them alone.
	z.MX("control.test", 10, "mx.control.test").A("mx.control.test", "192.0.2.3")
	spectest.Passing(z, append(z.Names(dns.TypeMX), "loopdomain.test")...)
	return sb, local
}

func hostileEngine(t *testing.T, sb *smtptest.Sandbox, allow ...string) *policy.Engine {
	t.Helper()
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Resolver.Timeout = 300 * time.Millisecond
	cfg.Probe.Port = sb.Port
	cfg.Probe.ConnectTimeout, cfg.Probe.GreetingTimeout = 300*time.Millisecond, 500*time.Millisecond
	for _, a := range allow {
		cfg.Probe.AllowNetworks = append(cfg.Probe.AllowNetworks, netip.MustParsePrefix(a))
	}
	return newEngine(t, cfg)
}

// budget is what an evaluation may take here at most: two rounds of DNS
// attempts, a probe, and slack for a loaded machine.
const budget = 2*2*300*time.Millisecond + 300*time.Millisecond + 500*time.Millisecond + 3*time.Second

func TestHostileDNS(t *testing.T) {
	sb, _ := hostileSandbox(t)
	e := hostileEngine(t, sb)
	// The checks on the domain's records (those with a fixture) say what
	// they say on control.test, or, where a case breaks every lookup of the
	// domain name, what the check table says of servfail.test, whose
	// every lookup fails: the cases are about the MX checks.
	control := e.Evaluate(context.Background(), policy.Request{Domain: "control.test"})
	unanswered := spectest.CaseNamed("MX SERVFAIL is not implicit MX")
	records := func(broken bool) string {
		var findings []string
		for _, ch := range control.Checks {
			if !ch.ID.AboutDomain() || !spectest.HasFixture(ch.ID) {
				continue
			}
			s := ch.Status
			if broken && s != policy.StatusSkip {
				s = unanswered.Status(ch.ID)
			}
			if s != policy.StatusPass {
				findings = append(findings, fmt.Sprintf("%s=%s", ch.ID, s))
			}
		}
		return strings.Join(findings, " ")
	}
	cases := []struct {
		domain, want, detail string
		// broken: every lookup of the domain name itself fails.
		broken bool
	}{
		{"huge.test", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "mx000.huge.test does not exist", false},
		{"chain.test", "mx.targets=temperror mx.port25=skip mx.outbound-ip=skip", "CNAME", false},
		{"loop.test", "mx.targets=temperror mx.port25=skip mx.outbound-ip=skip", "CNAME loop", false},
		// The records Passing gives loopdomain.test answer; its MX follows the loop.
		{"loopdomain.test", "mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "CNAME loop", false},
		{"trunc.test", "mx.targets=fail mx.port25=skip mx.outbound-ip=skip", "TEST-NET-1", false}, // the MX answer came over TCP
		{"wrongid.test", "mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "timeout", true},
		{"slow.test", "mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "timeout", true},
		{"refused.test", "mx.records=temperror mx.targets=skip mx.port25=skip mx.outbound-ip=skip", "REFUSED", true},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			r := e.Evaluate(context.Background(), policy.Request{Domain: c.domain})
			if took := time.Since(began); took > budget {
				t.Errorf("took %v", took)
			}
			var domainChecks []policy.Result // no client: the host checks skip
			for _, ch := range r.Checks {
				if ch.ID.AboutDomain() {
					domainChecks = append(domainChecks, ch)
				}
			}
			want := spectest.Merge(c.want, records(c.broken))
			if got := spectest.Findings(domainChecks); got != want {
				t.Errorf("findings %s, want %s", got, want)
				for _, ch := range r.Checks {
					t.Logf("  %s %s %s", ch.ID, ch.Status, ch.Detail)
				}
			}
			if c.detail != "" && !strings.Contains(firstFinding(r).Detail, c.detail) {
				t.Errorf("detail %q lacks %q", firstFinding(r).Detail, c.detail)
			}
			for _, ch := range r.Checks {
				if ch.Status == policy.StatusFail && strings.Contains(ch.Detail, "timeout") {
					t.Errorf("%s fails on a timeout: %s", ch.ID, ch.Detail)
				}
			}
		})
	}
}

// The 400-record MX set costs a bounded number of lookups: the 64 most
// preferred targets, A and AAAA each, besides what any domain costs (its
// MX, its records), as control.test's one target shows.
func TestHugeMXSetIsBounded(t *testing.T) {
	sb, _ := hostileSandbox(t)
	e := hostileEngine(t, sb)
	e.Evaluate(context.Background(), policy.Request{Domain: "control.test"})
	// The 400-record answer is truncated over UDP and asked again over TCP.
	perDomain := sb.DNS.Queries() - sb.DNS.QueryCount("mx.control.test", dns.TypeA) - sb.DNS.QueryCount("mx.control.test", dns.TypeAAAA) + 1
	sb.DNS.ResetCounts()
	e.Evaluate(context.Background(), policy.Request{Domain: "huge.test"})
	if n := sb.DNS.Queries(); n > perDomain+2*64 {
		t.Errorf("%d queries for one domain, over %d", n, perDomain+2*64)
	}
	if n := sb.DNS.QueryCount("mx064.huge.test", dns.TypeA); n != 0 {
		t.Error("a target beyond the 64 most preferred was looked up")
	}
}

// Internal addresses in MX records are never probed unless allow-listed,
// and the report says why.
func TestInternalMXAddressesAreNeverProbed(t *testing.T) {
	sb, local := hostileSandbox(t)
	e := hostileEngine(t, sb)
	for name, why := range map[string]string{
		"loopback": "loopback", "rfc1918": "private-use (RFC 1918)", "cgnat": "CGNAT", "linklocal": "link-local",
		"ula": "unique-local", "metadata": "169.254.169.254 (link-local", "mapped": "IPv4-mapped",
	} {
		r := e.Evaluate(context.Background(), policy.Request{Domain: name + ".test"})
		c := r.Check(policy.MXTargets)
		if c.Status != policy.StatusFail || !strings.Contains(c.Detail, why) || !strings.Contains(c.Detail, "special-purpose") {
			t.Errorf("%s: mx.targets %s %q", name, c.Status, c.Detail)
		}
		if r.Verdict() != policy.Defer {
			t.Errorf("%s: verdict %s", name, r.Verdict())
		}
	}
	if st := e.ProbeCacheStats(); st.Misses != 0 || local.Connections() != 0 {
		t.Errorf("probes were attempted: %d misses, %d connections", st.Misses, local.Connections())
	}
	// Allow-listed, the loopback one is probed (that is how sandboxes work).
	allowed := hostileEngine(t, sb, "127.0.0.0/8")
	if r := allowed.Evaluate(context.Background(), policy.Request{Domain: "loopback.test"}); r.Verdict() != policy.Pass || local.Connections() != 1 {
		t.Errorf("allow-listed loopback: %s, %d connections", spectest.Findings(r.Checks), local.Connections())
	}
}

// Hostile MX hosts cost neither goroutines nor file descriptors once the
// probes are over.
func TestHostileMXHostsLeakNothing(t *testing.T) {
	sb, _ := hostileSandbox(t)
	behaviours := []smtptest.Behavior{
		smtptest.Banner(strings.Repeat("220-never ends\r\n", 1<<16), 0),
		smtptest.Banner("220 "+strings.Repeat("x", 4<<20), 0),
		smtptest.Drip("220 drip\r\n", 200*time.Millisecond),
		smtptest.Reset, smtptest.Silent, smtptest.Blackhole, smtptest.NotSMTP,
	}
	for i, b := range behaviours {
		ip := fmt.Sprintf("127.0.11.%d", i+1)
		if _, err := sb.Serve(ip, b); err != nil {
			t.Fatal(err)
		}
		sb.Zone.MX(fmt.Sprintf("h%d.test", i), 10, fmt.Sprintf("mx.h%d.test", i)).A(fmt.Sprintf("mx.h%d.test", i), ip)
	}
	hostileEngine(t, sb).Evaluate(context.Background(), policy.Request{Domain: "ok.example"}) // warm up the runtime's own goroutines
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for round := 0; round < 3; round++ {
		e := hostileEngine(t, sb, "127.0.0.0/8") // a cold cache: every round probes
		for i := range behaviours {
			began := time.Now()
			r := e.Evaluate(context.Background(), policy.Request{Domain: fmt.Sprintf("h%d.test", i)})
			if took := time.Since(began); took > budget {
				t.Errorf("h%d: %v", i, took)
			}
			// The first two started a well-formed greeting: they speak SMTP.
			if c := r.Check(policy.MXPort25); (c.Status == policy.StatusPass) != (i < 2) {
				t.Errorf("h%d: mx.port25 %s: %s", i, c.Status, c.Detail)
			}
		}
	}
	// Generous: what leaks stays for good; what does not goes in milliseconds.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > goroutines+2 || openFDs(t) > fds+2) {
		time.Sleep(50 * time.Millisecond)
	}
	if g, f := runtime.NumGoroutine(), openFDs(t); g > goroutines+2 || f > fds+2 {
		t.Errorf("after the probes: %d goroutines (was %d), %d fds (was %d)", g, goroutines, f, fds)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}
