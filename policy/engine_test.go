package policy_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
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
	ipRefused   = "127.0.1.3"
	ipSilent    = "127.0.1.4"
	ipNotSMTP   = "127.0.1.5"
	ipBlackhole = "127.0.1.6"
	ipSlow      = "127.0.1.7"
	ipMultiLine = "127.0.1.8"
	ipAccept6   = "::1"
	ipOutDual   = "127.0.2.1" // outbound IP that also accepts SMTP
	ipOutOnly   = "127.0.2.2" // outbound IP that does not
)

const (
	connectTimeout  = 300 * time.Millisecond
	greetingTimeout = 600 * time.Millisecond
)

// sandbox builds the zone behind the SPEC table: one domain (or client) per row.
func sandbox(t testing.TB) *smtptest.Sandbox {
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
		ipSlow:      smtptest.SlowGreeting(greetingTimeout / 3),
		ipMultiLine: smtptest.Banner("220-multi.sandbox.test ESMTP\r\n220-policy text\r\n220 ready\r\n", 0),
		ipAccept6:   smtptest.Accept,
		ipOutDual:   smtptest.Accept,
	} {
		if _, err := sb.Serve(ip, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, ip := range []string{ipRefused, ipOutOnly} {
		if err := sb.Closed(ip); err != nil {
			t.Fatal(err)
		}
	}
	z := sb.Zone
	z.A("mx.accept.test", ipAccept).A("mx.554.test", ip554).A("mx.refused.test", ipRefused).
		A("mx.silent.test", ipSilent).A("mx.notsmtp.test", ipNotSMTP).A("mx.blackhole.test", ipBlackhole).
		A("mx.slow.test", ipSlow).A("mx.multiline.test", ipMultiLine).A("mx6.accept.test", ipAccept6).
		A("mx.dual.test", ipOutDual).A("mx.outonly.test", ipOutOnly)

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
	z.MX("many.test", 100, "mx.refused.test") // beyond probe.max_hosts: never examined

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

func sandboxConfig(sb *smtptest.Sandbox) policy.Config {
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Resolver.Timeout = 500 * time.Millisecond
	cfg.Probe.Port = sb.Port
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cfg.Probe.ConnectTimeout = connectTimeout
	cfg.Probe.GreetingTimeout = greetingTimeout
	cfg.OutboundIPs = []netip.Prefix{netip.MustParsePrefix(ipOutDual + "/32"), netip.MustParsePrefix(ipOutOnly + "/32")}
	cfg.SkipIdentityNetworks = nil // the sandbox clients are all loopback
	return cfg
}

func newEngine(t testing.TB, cfg policy.Config) *policy.Engine {
	t.Helper()
	e, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// statuses is the expected status of every check, in SPEC order, e.g.
// "pass pass pass pass pass / skip skip skip skip".
func statuses(t testing.TB, r *policy.Report) string {
	t.Helper()
	var parts []string
	for i, c := range r.Checks {
		if i == 5 {
			parts = append(parts, "/")
		}
		parts = append(parts, c.Status.String())
	}
	return strings.Join(parts, " ")
}

const (
	domainPass = "pass pass pass pass pass"
	noIdentity = "skip skip skip skip"
	goodHost   = "pass pass pass pass"
)

func TestEngineSPECTable(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	good := func(sender string) policy.Request {
		return policy.Request{Sender: sender, ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "mail.good.test"}
	}
	host := func(ip, helo string) policy.Request {
		return policy.Request{Sender: "a@v4.test", ClientIP: netip.MustParseAddr(ip), HELO: helo}
	}
	cases := []struct {
		name    string
		req     policy.Request
		want    string
		verdict policy.Verdict
		reply   string // expected reply prefix for defer/reject
		detail  string // a fragment the cause's (or first non-pass) detail must contain
	}{
		{"all pass", good("user@ok.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"bare domain, IDN-free, trailing dot, case", good("OK.Test."), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"domain is a CNAME", good("a@alias-domain.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"IPv6-only MX", good("a@v6only.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"null sender", good("<>"), "skip skip skip skip skip / " + goodHost, policy.Pass, "", ""},
		{"address literal domain", good("a@[127.0.0.1]"), "fail skip skip skip skip / " + goodHost, policy.Reject, "550 5.7.1", "address literal"},
		{"bad domain syntax", good("a@bad_domain.test"), "fail skip skip skip skip / " + goodHost, policy.Reject, "550 5.7.1", "bad_domain"},
		{"NXDOMAIN", good("a@nx.test"), "pass fail skip skip skip / " + goodHost, policy.Defer, "451 4.7.1", "NXDOMAIN"},
		{"null MX", good("a@nullmx.test"), "pass fail skip skip skip / " + goodHost, policy.Defer, "451 4.7.27", "null MX"},
		{"null MX mixed", good("a@mixednull.test"), "pass fail skip skip skip / " + goodHost, policy.Defer, "451 4.7.27", "mixes a null MX"},
		{"implicit MX", good("a@implicit.test"), "pass warn pass pass pass / " + goodHost, policy.Flag, "", "implicit MX"},
		{"no MX, no address", good("a@nomail.test"), "pass fail skip skip skip / " + goodHost, policy.Defer, "451 4.7.1", "no MX records and no A/AAAA"},
		{"MX SERVFAIL is not implicit MX", good("a@servfail.test"), "pass temperror skip skip skip / " + goodHost, policy.Pass, "", "SERVFAIL"},
		{"MX target is a CNAME", good("a@cname-mx.test"), "pass pass fail skip skip / " + goodHost, policy.Defer, "451 4.7.1", "CNAME"},
		{"MX target is an IP literal", good("a@literal-mx.test"), "pass pass fail skip skip / " + goodHost, policy.Defer, "451 4.7.1", "IP address"},
		{"MX target special-purpose", good("a@private-mx.test"), "pass pass fail skip skip / " + goodHost, policy.Defer, "451 4.7.1", "169.254.169.254 (link-local"},
		{"MX target does not exist", good("a@ghost-mx.test"), "pass pass fail skip skip / " + goodHost, policy.Defer, "451 4.7.1", "NXDOMAIN"},
		{"MX target has no address", good("a@noaddr-mx.test"), "pass pass fail skip skip / " + goodHost, policy.Defer, "451 4.7.1", "no A or AAAA"},
		{"some MX targets unusable", good("a@mixed-targets.test"), "pass pass warn pass pass / " + goodHost, policy.Flag, "", "1 of 2 MX targets unusable"},
		{"MX target SERVFAIL", good("a@target-servfail.test"), "pass pass temperror skip skip / " + goodHost, policy.Pass, "", "SERVFAIL"},
		{"MX refuses port 25", good("a@refused.test"), "pass pass pass fail pass / " + goodHost, policy.Defer, "451 4.7.1", "connection refused"},
		{"MX is not SMTP", good("a@notsmtp.test"), "pass pass pass fail pass / " + goodHost, policy.Defer, "451 4.7.1", "not an SMTP greeting"},
		{"some MX refuse", good("a@some-refused.test"), "pass pass pass warn pass / " + goodHost, policy.Flag, "", "connection refused"},
		{"554 greeting is SMTP", good("a@554.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"silent MX is inconclusive", good("a@silent.test"), "pass pass pass temperror pass / " + goodHost, policy.Pass, "", "no greeting"},
		{"blackholed MX is inconclusive", good("a@blackhole.test"), "pass pass pass temperror pass / " + goodHost, policy.Pass, "", "no answer to the TCP"},
		{"refused plus timeout is inconclusive", good("a@refused-and-silent.test"), "pass pass pass temperror pass / " + goodHost, policy.Pass, "", "refused"},
		{"slow greeting within timeout", good("a@slow.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"multi-line greeting", good("a@multiline.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"outbound IP accepts (dual role)", good("a@dual.test"), "pass pass pass pass warn / " + goodHost, policy.Flag, "", "dual role"},
		{"outbound-only IP as MX", good("a@outonly.test"), "pass pass pass warn fail / " + goodHost, policy.Defer, "451 4.7.1", "outbound IP"},
		{"MX cap", good("a@many.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},

		{"no client IP", policy.Request{Sender: "a@ok.test", HELO: "mail.good.test"}, domainPass + " / " + noIdentity, policy.Pass, "", ""},
		{"no HELO", host("127.0.3.1", ""), domainPass + " / skip pass pass skip", policy.Pass, "", ""},
		{"HELO does not match PTR", host("127.0.3.1", "other.good.test"), domainPass + " / pass pass pass warn", policy.Flag, "", "is not the forward-confirmed PTR name mail.good.test"},
		{"HELO case and trailing dot", host("127.0.3.1", "MAIL.Good.Test."), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"HELO single label", host("127.0.3.1", "localhost"), domainPass + " / fail pass pass skip", policy.Flag, "", "single label"},
		{"HELO bare IP", host("127.0.3.1", "127.0.3.1"), domainPass + " / fail pass pass skip", policy.Flag, "", "bare IP"},
		{"HELO bad syntax", host("127.0.3.1", "mail_host.good.test"), domainPass + " / fail pass pass skip", policy.Flag, "", "mail_host"},
		{"HELO literal of client", host("127.0.3.1", "[127.0.3.1]"), domainPass + " / pass pass pass warn", policy.Flag, "", "address literal"},
		{"HELO literal not client", host("127.0.3.1", "[127.0.0.9]"), domainPass + " / fail pass pass warn", policy.Flag, "", "not the client address"},
		{"no PTR", host("127.0.3.2", "mail.good.test"), domainPass + " / pass fail skip skip", policy.Flag, "", "no PTR"},
		{"PTR without forward", host("127.0.3.3", "nofwd.good.test"), domainPass + " / pass pass fail skip", policy.Flag, "", "resolves back"},
		{"second PTR name confirms", host("127.0.3.4", "right.good.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"PTR SERVFAIL", host("127.0.3.5", "x.good.test"), domainPass + " / pass temperror skip skip", policy.Pass, "", "SERVFAIL"},
		{"forward SERVFAIL", host("127.0.3.6", "sf.good.test"), domainPass + " / pass pass temperror skip", policy.Pass, "", "SERVFAIL"},
		{"IPv6 client FCrDNS over AAAA", host("::1", "v6.good.test"), domainPass + " / " + goodHost, policy.Pass, "", ""},
		{"IPv6 address literal HELO", host("::1", "[IPv6:::1]"), domainPass + " / pass pass pass warn", policy.Flag, "", "address literal"},
		{"MTA-confirmed client name", policy.Request{Sender: "a@ok.test", ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "relay.good.test", ClientName: "relay.good.test"},
			domainPass + " / " + goodHost, policy.Pass, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := e.Evaluate(context.Background(), c.req)
			if got := statuses(t, r); got != c.want {
				t.Errorf("statuses\n got %s\nwant %s", got, c.want)
				for _, ch := range r.Checks {
					t.Logf("  %-18s %-9s %s", ch.ID, ch.Status, ch.Detail)
				}
			}
			if r.Verdict() != c.verdict {
				t.Errorf("verdict %s, want %s", r.Verdict(), c.verdict)
			}
			reply, ok := r.Reply()
			if c.reply != "" && (!ok || !strings.HasPrefix(reply.String(), c.reply)) {
				t.Errorf("reply %q (%v), want prefix %q", reply, ok, c.reply)
			}
			if c.reply == "" && ok {
				t.Errorf("unexpected reply %q", reply)
			}
			if c.detail != "" && !strings.Contains(firstFinding(r).Detail, c.detail) {
				t.Errorf("detail %q does not mention %q", firstFinding(r).Detail, c.detail)
			}
		})
	}
}

// firstFinding is the cause of the verdict, or else the first non-pass check.
func firstFinding(r *policy.Report) policy.Result {
	if c, ok := r.Cause(); ok {
		return c
	}
	for _, c := range r.Checks {
		if c.Status != policy.StatusPass && c.Status != policy.StatusSkip {
			return c
		}
	}
	return policy.Result{}
}

func TestReplyNamesDomainCheckHostAndFix(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	r := e.Evaluate(context.Background(), policy.Request{Sender: "bounce@refused.test"})
	reply, ok := r.Reply()
	if !ok {
		t.Fatal("no reply for a deferred sender")
	}
	for _, want := range []string{"451 4.7.1 refused.test", "mx.port25", "mx.refused.test", ipRefused, "Fix: "} {
		if !strings.Contains(reply.String(), want) {
			t.Errorf("reply %q lacks %q", reply, want)
		}
	}
	if got, want := r.HeaderValue(), "defer; domain=refused.test; mx.port25=fail"; got != want {
		t.Errorf("header %q, want %q", got, want)
	}
}

func TestHeaderListsFindings(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@some-refused.test",
		ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "other.good.test"})
	want := "flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn; helo.matches-ptr=warn"
	if got := r.HeaderValue(); got != want {
		t.Errorf("header\n got %q\nwant %q", got, want)
	}
}

func TestPolicyOverridesInEngine(t *testing.T) {
	sb := sandbox(t)
	cfg := sandboxConfig(sb)
	cfg.Policy.Actions[policy.MXPort25] = policy.Hold
	cfg.Policy.OnTempError = policy.Defer
	cfg.Policy.AllowDomains = []string{"outonly.test"}
	e := newEngine(t, cfg)
	ctx := context.Background()
	if v := e.Evaluate(ctx, policy.Request{Sender: "a@refused.test"}).Verdict(); v != policy.Hold {
		t.Errorf("mx.port25: hold gave %s", v)
	}
	r := e.Evaluate(ctx, policy.Request{Sender: "a@servfail.test"})
	reply, ok := r.Reply()
	if r.Verdict() != policy.Defer || !ok || !strings.HasPrefix(reply.String(), "451 4.4.3 ") {
		t.Errorf("on_temperror defer: %s %q", r.Verdict(), reply)
	}
	r = e.Evaluate(ctx, policy.Request{Sender: "a@outonly.test"})
	if r.Verdict() != policy.Pass || r.Checks[1].Status != policy.StatusSkip {
		t.Errorf("allow-listed domain: %s, %s", r.Verdict(), statuses(t, r))
	}
}

func TestSkipIdentityNetworks(t *testing.T) {
	sb := sandbox(t)
	cfg := sandboxConfig(sb)
	cfg.SkipIdentityNetworks = policy.DefaultConfig().SkipIdentityNetworks
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@ok.test", ClientIP: netip.MustParseAddr("127.0.3.2"), HELO: "localhost"})
	if got := statuses(t, r); got != domainPass+" / "+noIdentity {
		t.Errorf("loopback client: %s", got)
	}
	if !strings.Contains(r.Checks[5].Detail, "identity.skip_networks") {
		t.Errorf("skip detail %q", r.Checks[5].Detail)
	}
}

func TestWarmCacheMakesNoNetworkCalls(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	servers := map[string]*smtptest.SMTPServer{}
	for _, ip := range []string{"127.0.4.1", "127.0.4.2"} {
		srv, err := sb.Serve(ip, smtptest.Accept)
		if err != nil {
			t.Fatal(err)
		}
		servers[ip] = srv
	}
	sb.Zone.MX("warm.test", 10, "a.warm.test").MX("warm.test", 20, "b.warm.test").
		A("a.warm.test", "127.0.4.1").A("b.warm.test", "127.0.4.2").
		PTR("127.0.4.9", "out.warm.test").A("out.warm.test", "127.0.4.9")
	req := policy.Request{Sender: "a@warm.test", ClientIP: netip.MustParseAddr("127.0.4.9"), HELO: "out.warm.test"}
	first := e.Evaluate(context.Background(), req)
	if first.Verdict() != policy.Pass {
		t.Fatalf("cold evaluation: %s %s", first.Verdict(), statuses(t, first))
	}
	queries, conns := sb.DNS.Queries(), servers["127.0.4.1"].Connections()+servers["127.0.4.2"].Connections()
	if queries == 0 || conns != 2 {
		t.Fatalf("cold evaluation made %d queries and %d connections", queries, conns)
	}
	second := e.Evaluate(context.Background(), req)
	if got := sb.DNS.Queries() - queries; got != 0 {
		t.Errorf("warm evaluation made %d DNS queries", got)
	}
	if got := servers["127.0.4.1"].Connections() + servers["127.0.4.2"].Connections() - conns; got != 0 {
		t.Errorf("warm evaluation made %d SMTP connections", got)
	}
	if statuses(t, second) != statuses(t, first) || second.Verdict() != first.Verdict() {
		t.Errorf("warm result differs: %s vs %s", statuses(t, second), statuses(t, first))
	}
}

func TestConcurrentMissesCollapse(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	srv, err := sb.Serve("127.0.5.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("herd.test", 10, "mx.herd.test").A("mx.herd.test", "127.0.5.1")
	sb.Zone.SetFault("herd.test", smtptest.Delay(100*time.Millisecond)) // keep the first lookup in flight
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.Evaluate(context.Background(), policy.Request{Sender: "a@herd.test"}); r.Verdict() != policy.Pass {
				t.Errorf("verdict %s", r.Verdict())
			}
		}()
	}
	wg.Wait()
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"herd.test", dns.TypeMX}, {"mx.herd.test", dns.TypeA}, {"mx.herd.test", dns.TypeAAAA}} {
		if n := sb.DNS.QueryCount(q.name, q.qtype); n != 1 {
			t.Errorf("%s/%s queried %d times", q.name, dns.TypeToString[q.qtype], n)
		}
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("MX probed %d times", n)
	}
}

func TestCacheHonoursTTLs(t *testing.T) {
	sb := sandbox(t)
	cfg := sandboxConfig(sb)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg.Cache.MinTTL, cfg.Cache.MaxTTL = 30*time.Second, time.Hour
	cfg.Cache.NegativeMaxTTL = 10 * time.Minute
	e := newEngine(t, cfg)
	sb.Zone.MustAdd("ttl.test. 120 IN MX 10 mx.accept.test.")
	ctx := context.Background()
	eval := func(sender string) { e.Evaluate(ctx, policy.Request{Sender: sender}) }

	eval("a@ttl.test")
	eval("a@gone.test") // NXDOMAIN, negative TTL 60 s from the SOA minimum
	if n := sb.DNS.QueryCount("ttl.test", dns.TypeMX); n != 1 {
		t.Fatalf("MX queried %d times", n)
	}
	advance(59 * time.Second)
	eval("a@ttl.test")
	eval("a@gone.test")
	if a, b := sb.DNS.QueryCount("ttl.test", dns.TypeMX), sb.DNS.QueryCount("gone.test", dns.TypeMX); a != 1 || b != 1 {
		t.Errorf("within TTL: MX %d, NXDOMAIN %d queries", a, b)
	}
	advance(2 * time.Second) // 61 s: the negative answer expired, the positive one not
	eval("a@ttl.test")
	eval("a@gone.test")
	if a, b := sb.DNS.QueryCount("ttl.test", dns.TypeMX), sb.DNS.QueryCount("gone.test", dns.TypeMX); a != 1 || b != 2 {
		t.Errorf("after 61 s: MX %d, NXDOMAIN %d queries", a, b)
	}
	advance(60 * time.Second) // 121 s
	eval("a@ttl.test")
	if n := sb.DNS.QueryCount("ttl.test", dns.TypeMX); n != 2 {
		t.Errorf("after the TTL: MX queried %d times", n)
	}
	if st := e.DNSCacheStats(); st.Hits == 0 || st.Misses == 0 || st.Entries == 0 {
		t.Errorf("cache stats %+v", st)
	}
}

func TestProbeTTLPerOutcome(t *testing.T) {
	sb := sandbox(t)
	cfg := sandboxConfig(sb)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg.Cache.MaxTTL = 24 * time.Hour // keep DNS answers; watch probes only
	cfg.Cache.ProbeAcceptTTL, cfg.Cache.ProbeRefusedTTL, cfg.Cache.ProbeTimeoutTTL = time.Hour, 10*time.Minute, time.Minute
	e := newEngine(t, cfg)
	accept, err := sb.Serve("127.0.6.1", smtptest.Accept)
	if err != nil {
		t.Fatal(err)
	}
	silent, err := sb.Serve("127.0.6.2", smtptest.Silent)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("pa.test", 10, "mx.pa.test").A("mx.pa.test", "127.0.6.1")
	sb.Zone.MX("ps.test", 10, "mx.ps.test").A("mx.ps.test", "127.0.6.2")
	for _, step := range []time.Duration{0, 59 * time.Second, 2 * time.Second, time.Hour} {
		mu.Lock()
		now = now.Add(step)
		mu.Unlock()
		e.Evaluate(context.Background(), policy.Request{Sender: "a@pa.test"})
		e.Evaluate(context.Background(), policy.Request{Sender: "a@ps.test"})
	}
	// accept: probed at 0 and again after 1h1m; silent: at 0, 61 s, and 1h1m.
	if a, s := accept.Connections(), silent.Connections(); a != 2 || s != 3 {
		t.Errorf("probes: accepting %d (want 2), silent %d (want 3)", a, s)
	}
}

func TestDeadResolverIsTempError(t *testing.T) {
	sb := sandbox(t)
	cfg := sandboxConfig(sb)
	cfg.Resolver.Servers = []string{"127.0.0.1:1"} // nothing listens there
	cfg.Resolver.Timeout = 200 * time.Millisecond
	e := newEngine(t, cfg)
	r := e.Evaluate(context.Background(), policy.Request{Sender: "a@ok.test", ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "mail.good.test"})
	if got, want := statuses(t, r), "pass temperror skip skip skip / pass temperror skip skip"; got != want {
		t.Errorf("statuses %s, want %s", got, want)
	}
	if r.Verdict() != policy.Pass || !r.Decision.TempError {
		t.Errorf("decision %+v", r.Decision)
	}
}

func TestDecisionDeadline(t *testing.T) {
	sb := sandbox(t)
	e := newEngine(t, sandboxConfig(sb))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	r := e.Evaluate(ctx, policy.Request{Sender: "a@silent.test"}) // the probe needs the whole greeting timeout
	if took := time.Since(began); took > greetingTimeout {
		t.Errorf("evaluation took %v past its deadline", took)
	}
	if r.Checks[3].Status != policy.StatusTempError {
		t.Errorf("mx.port25 %s: %s", r.Checks[3].Status, r.Checks[3].Detail)
	}
	// The probe finishes in the background and lands in the cache.
	time.Sleep(greetingTimeout + 200*time.Millisecond)
	before := e.ProbeCacheStats().Hits
	e.Evaluate(context.Background(), policy.Request{Sender: "a@silent.test"})
	if e.ProbeCacheStats().Hits == before {
		t.Error("the abandoned probe did not reach the cache")
	}
}
