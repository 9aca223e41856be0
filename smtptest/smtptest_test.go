package smtptest

import (
	"bufio"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func newSandbox(t *testing.T) *Sandbox {
	t.Helper()
	sb, err := NewSandbox()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	return sb
}

func query(t *testing.T, sb *Sandbox, net, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	c := &dns.Client{Net: net, Timeout: 10 * time.Second} // a backstop: answers come in milliseconds
	r, _, err := c.Exchange(m, sb.DNS.Addr)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestZoneAnswers(t *testing.T) {
	sb := newSandbox(t)
	sb.Zone.MX("example.test", 10, "mx.example.test").
		A("mx.example.test", "127.0.0.5", "::1").
		CNAME("alias.example.test", "mx.example.test").
		CNAME("loop1.example.test", "loop2.example.test").
		CNAME("loop2.example.test", "loop1.example.test").
		PTR("127.0.0.5", "mx.example.test")
	sb.Zone.MustAdd("ttl.example.test. 42 IN A 127.0.0.9", "nottl.example.test. IN A 127.0.0.9")

	if r := query(t, sb, "udp", "example.test", dns.TypeMX, false); len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.example.test." {
		t.Errorf("MX answer = %v", r.Answer)
	}
	if r := query(t, sb, "udp", "alias.example.test", dns.TypeA, false); len(r.Answer) != 2 {
		t.Errorf("CNAME chain answer = %v", r.Answer)
	}
	if r := query(t, sb, "udp", "loop1.example.test", dns.TypeA, false); len(r.Answer) != 2 || r.Rcode != dns.RcodeSuccess {
		t.Errorf("CNAME loop answer = %v rcode %d", r.Answer, r.Rcode)
	}
	if r := query(t, sb, "udp", "nothere.example.test", dns.TypeA, false); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("NXDOMAIN: rcode %d, authority %v", r.Rcode, r.Ns)
	}
	// "test" exists as an ancestor of example.test: NODATA, not NXDOMAIN.
	if r := query(t, sb, "udp", "test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("empty non-terminal: rcode %d answer %v", r.Rcode, r.Answer)
	}
	if r := query(t, sb, "udp", "5.0.0.127.in-addr.arpa", dns.TypePTR, false); len(r.Answer) != 1 {
		t.Errorf("PTR answer = %v", r.Answer)
	}
	if r := query(t, sb, "udp", "ttl.example.test", dns.TypeA, false); r.Answer[0].Header().Ttl != 42 {
		t.Errorf("explicit TTL = %d", r.Answer[0].Header().Ttl)
	}
	if r := query(t, sb, "udp", "nottl.example.test", dns.TypeA, false); r.Answer[0].Header().Ttl != DefaultTTL {
		t.Errorf("default TTL = %d", r.Answer[0].Header().Ttl)
	}
	if got := sb.DNS.QueryCount("example.test", dns.TypeMX); got != 1 {
		t.Errorf("QueryCount = %d", got)
	}
	if err := sb.Zone.Add("bad record"); err == nil {
		t.Error("Add accepted a malformed record")
	}
}

// Records built in Go: several strings in one TXT record, arbitrary
// octets, the SPF type, and owners with escaped octets, which match a query
// for the same name however it is written.
func TestZoneAddRR(t *testing.T) {
	sb := newSandbox(t)
	hdr := func(name string, rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: DefaultTTL}
	}
	sb.Zone.AddRR(
		&dns.TXT{Hdr: hdr("two strings.example.test.", dns.TypeTXT), Txt: []string{"v=spf1 ip4:", "192.0.2.5 -all"}},
		&dns.SPF{Hdr: hdr(`two\032strings.example.test.`, dns.TypeSPF), Txt: []string{"v=spf1 -all"}},
		&dns.A{Hdr: hdr("MiXed.Example.Test.", dns.TypeA), A: net.IPv4(127, 0, 0, 9)},
	)
	r := query(t, sb, "udp", `two\ strings.example.test`, dns.TypeTXT, false)
	if len(r.Answer) != 1 || !slices.Equal(r.Answer[0].(*dns.TXT).Txt, []string{"v=spf1 ip4:", "192.0.2.5 -all"}) {
		t.Errorf("TXT of two strings: %v", r.Answer)
	}
	if r := query(t, sb, "udp", `two\032strings.example.test`, dns.TypeSPF, false); len(r.Answer) != 1 {
		t.Errorf("SPF record: %v", r.Answer)
	}
	if r := query(t, sb, "udp", "mixed.example.test", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("A record of a mixed-case owner: %v", r.Answer)
	}
	sb.Zone.SetTypeFault(`two\ strings.example.test`, dns.TypeTXT, ServFail)
	if r := query(t, sb, "udp", `two\032strings.example.test`, dns.TypeTXT, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("fault on an escaped name: rcode %d", r.Rcode)
	}
	if r := query(t, sb, "udp", `two\032strings.example.test`, dns.TypeSPF, false); len(r.Answer) != 1 {
		t.Errorf("a TXT fault touched the SPF record: %v", r.Answer)
	}
	if got := sb.DNS.QueryCount(`two\ strings.example.test`, dns.TypeSPF); got != 2 {
		t.Errorf("QueryCount of an escaped name = %d", got)
	}
}

func TestTruncationAndFaults(t *testing.T) {
	sb := newSandbox(t)
	for i := 0; i < 100; i++ {
		sb.Zone.MX("big.example.test", uint16(i), "mx"+strings.Repeat("x", 40)+string(rune('a'+i%26))+".example.test")
	}
	if r := query(t, sb, "udp", "big.example.test", dns.TypeMX, false); !r.Truncated {
		t.Error("large UDP answer not truncated")
	}
	if r := query(t, sb, "tcp", "big.example.test", dns.TypeMX, false); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP answer: truncated %v, %d records", r.Truncated, len(r.Answer))
	}
	sb.Zone.A("f.example.test", "127.0.0.1")
	sb.Zone.SetFault("f.example.test", ServFail)
	if r := query(t, sb, "udp", "f.example.test", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ServFail fault: rcode %d", r.Rcode)
	}
	sb.Zone.SetFault("f.example.test", Truncate)
	if r := query(t, sb, "udp", "f.example.test", dns.TypeA, true); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("Truncate fault over UDP: %v", r)
	}
	if r := query(t, sb, "tcp", "f.example.test", dns.TypeA, true); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("Truncate fault over TCP: %v", r)
	}
	sb.Zone.SetFault("f.example.test", Drop)
	m := new(dns.Msg).SetQuestion("f.example.test.", dns.TypeA)
	if _, _, err := (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, sb.DNS.Addr); err == nil {
		t.Error("Drop fault answered")
	}
	sb.Zone.SetFault("f.example.test", Fault{})
	if r := query(t, sb, "udp", "f.example.test", dns.TypeA, false); len(r.Answer) != 1 {
		t.Error("fault not cleared")
	}
}

// A zone's latency delays every answer but those of names with a fault:
// the delay is the property, so it is timed (a lower bound only).
func TestZoneLatency(t *testing.T) {
	sb := newSandbox(t)
	sb.Zone.A("slow.example.test", "127.0.0.1").A("f.example.test", "127.0.0.1")
	sb.Zone.SetFault("f.example.test", ServFail).SetLatency(200 * time.Millisecond)
	began := time.Now()
	if r := query(t, sb, "udp", "slow.example.test", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("answer under latency: %v", r)
	}
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Errorf("answered in %v, before the 200ms latency", took)
	}
	if r := query(t, sb, "udp", "f.example.test", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("a name's own fault lost under latency: rcode %d", r.Rcode)
	}
}

func greeting(t *testing.T, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	return bufio.NewReader(c).ReadString('\n')
}

func TestBehaviors(t *testing.T) {
	sb := newSandbox(t)
	cases := []struct {
		ip   string
		b    Behavior
		want string
	}{
		{"127.0.0.11", Accept, "220 mx.sandbox.test"},
		{"127.0.0.12", Greet554, "554 "},
		{"127.0.0.13", NotSMTP, "SSH-2.0"},
		{"127.0.0.14", SlowGreeting(300 * time.Millisecond), "220 slow"},
	}
	for _, c := range cases {
		srv, err := sb.Serve(c.ip, c.b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := greeting(t, srv.Addr, 10*time.Second) // a backstop: a loaded machine may be slow
		if err != nil || !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: greeting %q, %v; want %q", c.ip, got, err, c.want)
		}
		if srv.Connections() != 1 {
			t.Errorf("%s: %d connections counted", c.ip, srv.Connections())
		}
	}
	silent, _ := sb.Serve("127.0.0.15", Silent)
	var ne net.Error
	if _, err := greeting(t, silent.Addr, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Silent: %v, want a read timeout", err)
	}
	hole, err := sb.Serve("127.0.0.16", Blackhole)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", hole.Addr, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Blackhole: dial %v, want a connect timeout", err)
	}
	if err := sb.Closed("127.0.0.17"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", net.JoinHostPort("127.0.0.17", itoa(sb.Port))); err == nil {
		t.Error("Closed address accepted a connection")
	}
	if err := sb.Closed("127.0.0.11"); err == nil {
		t.Error("Closed did not notice a listening server")
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
