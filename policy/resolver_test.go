package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

func testClient(t *testing.T, servers ...string) *dnsClient {
	t.Helper()
	c, err := newDNSClient(ResolverConfig{Servers: servers, Timeout: 300 * time.Millisecond, Attempts: 2, MaxCNAMEDepth: 4})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dnsErrorKind(t *testing.T, err error) dnsErrKind {
	t.Helper()
	var de *dnsError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *dnsError", err, err)
	}
	return de.Kind
}

func TestLookupKinds(t *testing.T) {
	sb := newTestSandbox(t)
	sb.Zone.MustAdd("a.test. 120 IN A 192.0.2.1", "a.test. 90 IN A 192.0.2.2", "a.test. IN TXT \"x\"")
	sb.Zone.SetNegativeTTL(42)
	c := testClient(t, sb.DNS.Addr)
	ctx := context.Background()

	a, err := c.Lookup(ctx, "A.Test.", dns.TypeA)
	if err != nil || a.Kind != kindFound || len(a.Addrs) != 2 || a.TTL != 90*time.Second {
		t.Errorf("A: %+v %v", a, err)
	}
	nodata, err := c.Lookup(ctx, "a.test", dns.TypeAAAA)
	if err != nil || nodata.Kind != kindNoData || nodata.TTL != 42*time.Second {
		t.Errorf("NODATA: %+v %v", nodata, err)
	}
	nx, err := c.Lookup(ctx, "b.test", dns.TypeA)
	if err != nil || nx.Kind != kindNXDomain || nx.TTL != 42*time.Second {
		t.Errorf("NXDOMAIN: %+v %v", nx, err)
	}
}

func TestLookupMXSortedAndCapped(t *testing.T) {
	sb := newTestSandbox(t)
	for i := 0; i < 300; i++ { // far beyond 512 octets: truncated over UDP, complete over TCP
		sb.Zone.MX("big.test", uint16(1000-i), strings.Repeat("m", 30)+strconv.Itoa(i)+".big.test")
	}
	sb.Zone.MX("big.test", 1000, "zz.big.test").MX("big.test", 1000, "zz.big.test") // duplicate
	c := testClient(t, sb.DNS.Addr)
	a, err := c.Lookup(context.Background(), "big.test", dns.TypeMX)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.MX) != maxMXRecords || a.MX[0].Pref != 701 || a.MX[len(a.MX)-1].Pref != 701+maxMXRecords-1 {
		t.Errorf("%d MX from pref %d to %d", len(a.MX), a.MX[0].Pref, a.MX[len(a.MX)-1].Pref)
	}
	if sb.DNS.QueryCount("big.test", dns.TypeMX) != 2 {
		t.Errorf("want one UDP and one TCP query, got %d", sb.DNS.QueryCount("big.test", dns.TypeMX))
	}
}

func TestLookupCNAMEs(t *testing.T) {
	sb := newTestSandbox(t)
	z := sb.Zone
	z.CNAME("one.test", "two.test").CNAME("two.test", "end.test").A("end.test", "192.0.2.9")
	z.CNAME("loop1.test", "loop2.test").CNAME("loop2.test", "loop1.test")
	z.CNAME("c1.test", "c2.test").CNAME("c2.test", "c3.test").CNAME("c3.test", "c4.test").
		CNAME("c4.test", "c5.test").CNAME("c5.test", "c6.test").A("c6.test", "192.0.2.10")
	z.CNAME("dangling.test", "nowhere.test")
	c := testClient(t, sb.DNS.Addr)
	ctx := context.Background()

	a, err := c.Lookup(ctx, "one.test", dns.TypeA)
	if err != nil || a.Kind != kindFound || strings.Join(a.Aliases, ",") != "two.test,end.test" || a.Addrs[0] != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("chain: %+v %v", a, err)
	}
	if _, err := c.Lookup(ctx, "loop1.test", dns.TypeA); err == nil || dnsErrorKind(t, err) != errCNAMELoop {
		t.Errorf("loop: %v", err)
	}
	if _, err := c.Lookup(ctx, "c1.test", dns.TypeA); err == nil || dnsErrorKind(t, err) != errCNAMELoop {
		t.Errorf("chain longer than 4: %v", err)
	}
	d, err := c.Lookup(ctx, "dangling.test", dns.TypeA)
	if err != nil || d.Kind != kindNXDomain || len(d.Aliases) != 1 {
		t.Errorf("dangling CNAME: %+v %v", d, err)
	}
}

// A server that answers only with the CNAME makes the client ask for its end.
func TestLookupFollowsChainAcrossQueries(t *testing.T) {
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		switch r.Question[0].Name {
		case "alias.test.":
			rr, _ := dns.NewRR("alias.test. 60 IN CNAME real.other.")
			m.Answer = append(m.Answer, rr)
		case "real.other.":
			rr, _ := dns.NewRR("real.other. 30 IN A 192.0.2.77")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	addr := serveDNS(t, mux)
	a, err := testClient(t, addr).Lookup(context.Background(), "alias.test", dns.TypeA)
	if err != nil || len(a.Addrs) != 1 || a.Aliases[0] != "real.other" || a.TTL != 30*time.Second {
		t.Errorf("%+v %v", a, err)
	}
}

func serveDNS(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestLookupFaults(t *testing.T) {
	sb := newTestSandbox(t)
	z := sb.Zone
	z.A("servfail.test", "192.0.2.1").SetFault("servfail.test", smtptest.ServFail)
	z.A("refused.test", "192.0.2.1").SetFault("refused.test", smtptest.Refused)
	z.A("drop.test", "192.0.2.1").SetFault("drop.test", smtptest.Drop)
	z.A("wrongid.test", "192.0.2.1").SetFault("wrongid.test", smtptest.WrongID)
	z.A("trunc.test", "192.0.2.1").SetFault("trunc.test", smtptest.Truncate)
	z.A("slow.test", "192.0.2.1").SetFault("slow.test", smtptest.Delay(100*time.Millisecond))
	z.A("veryslow.test", "192.0.2.1").SetFault("veryslow.test", smtptest.Delay(2*time.Second))
	c := testClient(t, sb.DNS.Addr)
	ctx := context.Background()
	for name, want := range map[string]dnsErrKind{
		"servfail.test": errServFail, "refused.test": errServFail, "drop.test": errTimeout,
		"wrongid.test": errTimeout, "veryslow.test": errTimeout,
	} {
		began := time.Now()
		_, err := c.Lookup(ctx, name, dns.TypeA)
		if err == nil || dnsErrorKind(t, err) != want {
			t.Errorf("%s: %v, want kind %d", name, err, want)
		}
		// Attempts × timeout is 600ms. Without the per-attempt timeout a
		// dropped query would wait forever (or for the library's 2s per
		// attempt); 1s of slack holds on a loaded machine. Extra attempts are
		// counted below.
		if took := time.Since(began); took > 2*300*time.Millisecond+time.Second {
			t.Errorf("%s: took %v, beyond attempts × timeout", name, took)
		}
	}
	for _, name := range []string{"servfail.test", "refused.test", "drop.test", "wrongid.test", "veryslow.test"} {
		// The server counts a query when it reads it, which a loaded machine
		// may put off until after the client gave up on it.
		testkit.WaitFor(t, name+" to be asked twice", func() bool { return sb.DNS.QueryCount(name, dns.TypeA) >= 2 })
		if n := sb.DNS.QueryCount(name, dns.TypeA); n != 2 {
			t.Errorf("%s asked %d times, want 2 attempts", name, n)
		}
	}
	for _, name := range []string{"trunc.test", "slow.test"} {
		if a, err := c.Lookup(ctx, name, dns.TypeA); err != nil || len(a.Addrs) != 1 {
			t.Errorf("%s: %+v %v", name, a, err)
		}
	}
	if _, err := c.Lookup(ctx, "refused.test", dns.TypeA); err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Errorf("REFUSED not named: %v", err)
	}
}

func TestLookupFailsOverToTheNextServer(t *testing.T) {
	sb := newTestSandbox(t)
	sb.Zone.A("x.test", "192.0.2.1")
	dead := "127.0.0.1:1"     // nothing listens: ICMP port unreachable
	for i := 0; i < 10; i++ { // whichever server a query starts with, it gets an answer
		a, err := testClient(t, dead, sb.DNS.Addr).Lookup(context.Background(), "x.test", dns.TypeA)
		if err != nil || len(a.Addrs) != 1 {
			t.Fatalf("%+v %v", a, err)
		}
	}
	if _, err := testClient(t, dead).Lookup(context.Background(), "x.test", dns.TypeA); err == nil || dnsErrorKind(t, err) != errNetwork {
		t.Errorf("dead resolver: %v", err)
	}
}

func TestLookupRejectsMismatchedAnswer(t *testing.T) {
	addr := serveDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Question[0].Name = "other.test."
		w.WriteMsg(m)
	}))
	if _, err := testClient(t, addr).Lookup(context.Background(), "x.test", dns.TypeA); err == nil || dnsErrorKind(t, err) != errBadResponse {
		t.Errorf("mismatched question: %v", err)
	}
}

// A name no query can carry is never sent, and is not a temporary error:
// it cannot get better (RFC 1035 section 2.3.4).
func TestLookupOfANameDNSCannotCarry(t *testing.T) {
	sb := newTestSandbox(t)
	c := testClient(t, sb.DNS.Addr)
	for _, name := range []string{"mail.example...com", strings.Repeat("a", 64) + ".test", strings.Repeat("abcdefghi.", 26) + "test"} {
		if _, err := c.Lookup(context.Background(), name, dns.TypeA); err == nil || dnsErrorKind(t, err) != errInvalidName {
			t.Errorf("%s: %v, want an invalid name", name, err)
		}
	}
	if n := sb.DNS.Queries(); n != 0 {
		t.Errorf("%d queries sent for names DNS cannot carry", n)
	}
}

// A name with octets that miekg/dns escapes (a space comes back as "\ ")
// matches its answer however the caller wrote it.
func TestLookupOfANameWithSpaces(t *testing.T) {
	sb := newTestSandbox(t)
	sb.Zone.MustAdd(`two\ spaces\ here.test. A 192.0.2.1`)
	c := testClient(t, sb.DNS.Addr)
	for _, name := range []string{"two spaces here.test", `two\ spaces\032here.test`} {
		if a, err := c.Lookup(context.Background(), name, dns.TypeA); err != nil || len(a.Addrs) != 1 {
			t.Errorf("%q: %+v %v", name, a, err)
		}
	}
}

// TXT records are octets: what miekg/dns escapes in them ("\"", "\\",
// "\DDD" for bytes outside printable ASCII) comes back as sent, so an SPF
// record with a stray byte is seen with it (RFC 7208 section 4.6.1).
func TestLookupTXTIsOctets(t *testing.T) {
	sb := newTestSandbox(t)
	sb.Zone.MustAdd(`txt.test. TXT "v=spf1 a:\239\187\191x.test" " \"quoted\" back\\slash"`)
	a, err := testClient(t, sb.DNS.Addr).Lookup(context.Background(), "txt.test", dns.TypeTXT)
	if want := "v=spf1 a:\xef\xbb\xbfx.test \"quoted\" back\\slash"; err != nil || len(a.TXT) != 1 || a.TXT[0] != want {
		t.Errorf("%+v %v, want %q", a, err, want)
	}
}
