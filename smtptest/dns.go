package smtptest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of records added by the Zone helpers.
const DefaultTTL = 300

// Zone is an authoritative zone built in Go: every name the sandbox DNS
// server is asked about is answered from it (NXDOMAIN for names it lacks).
// A Zone is safe for concurrent use; tests may change it while it is served.
type Zone struct {
	mu      sync.RWMutex
	records map[string][]dns.RR // by lowercase owner FQDN
	exists  map[string]bool     // owners and their ancestors (empty non-terminals exist)
	faults  map[faultKey]Fault
	latency time.Duration // before every answer without a fault of its own
	// NegativeTTL is the SOA minimum sent with NXDOMAIN and NODATA answers.
	negativeTTL uint32
}

// NewZone returns an empty zone whose negative answers carry a 60 s SOA minimum.
func NewZone() *Zone {
	return &Zone{
		records:     map[string][]dns.RR{},
		exists:      map[string]bool{},
		faults:      map[faultKey]Fault{},
		negativeTTL: 60,
	}
}

// Add adds records in zone-file syntax, e.g.
// "example.test. 300 IN MX 10 mx.example.test.". A missing TTL means DefaultTTL.
func (z *Zone) Add(records ...string) error {
	var rrs []dns.RR
	for _, s := range records {
		zp := dns.NewZoneParser(strings.NewReader(s), ".", "")
		zp.SetDefaultTTL(DefaultTTL)
		n := 0
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			rrs = append(rrs, rr)
			n++
		}
		if err := zp.Err(); err != nil {
			return fmt.Errorf("smtptest: record %q: %w", s, err)
		}
		if n == 0 {
			return fmt.Errorf("smtptest: record %q is empty", s)
		}
	}
	z.AddRR(rrs...)
	return nil
}

// AddRR adds records built in Go, for what zone-file syntax makes awkward:
// TXT records of several strings or of arbitrary octets, owner names with
// spaces or other octets escaped (miekg/dns presentation format). The zone
// keeps its own copies.
func (z *Zone) AddRR(rrs ...dns.RR) *Zone {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		owner := canonical(rr.Header().Name)
		z.records[owner] = append(z.records[owner], rr)
		for _, i := range dns.Split(owner) { // the owner and its ancestors
			z.exists[owner[i:]] = true
		}
	}
	return z
}

// MustAdd is Add for records known to be well-formed; it panics on a typo.
func (z *Zone) MustAdd(records ...string) *Zone {
	if err := z.Add(records...); err != nil {
		panic(err)
	}
	return z
}

// MX adds an MX record; host "." makes a null MX (RFC 7505).
func (z *Zone) MX(domain string, pref uint16, host string) *Zone {
	return z.MustAdd(fmt.Sprintf("%s %d IN MX %d %s", canonical(domain), DefaultTTL, pref, canonical(host)))
}

// A adds A or AAAA records, by the family of each address.
func (z *Zone) A(name string, ips ...string) *Zone {
	for _, s := range ips {
		ip := netip.MustParseAddr(s)
		t := "A"
		if ip.Is6() {
			t = "AAAA"
		}
		z.MustAdd(fmt.Sprintf("%s %d IN %s %s", canonical(name), DefaultTTL, t, ip))
	}
	return z
}

// CNAME makes name an alias of target.
func (z *Zone) CNAME(name, target string) *Zone {
	return z.MustAdd(fmt.Sprintf("%s %d IN CNAME %s", canonical(name), DefaultTTL, canonical(target)))
}

// PTR adds a reverse record for ip (in-addr.arpa or ip6.arpa).
func (z *Zone) PTR(ip string, names ...string) *Zone {
	rev, err := dns.ReverseAddr(netip.MustParseAddr(ip).String())
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		z.MustAdd(fmt.Sprintf("%s %d IN PTR %s", rev, DefaultTTL, canonical(n)))
	}
	return z
}

// TXT adds a TXT record; text longer than a DNS string (255 octets), as a
// DKIM key is, goes in several strings of one record (RFC 7208 section 3.3).
func (z *Zone) TXT(name, text string) *Zone {
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: canonical(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: DefaultTTL}}
	for len(text) > 255 {
		rr.Txt, text = append(rr.Txt, text[:255]), text[255:]
	}
	rr.Txt = append(rr.Txt, text)
	return z.AddRR(rr)
}

// Blocklist zones (RFC 5782): a listing is an A record (its return code,
// in 127.0.0.0/8) with a TXT record for the reason.

// ListedName is the name a blocklist query for subject asks: an IP
// address's octets (IPv4) or nibbles (IPv6) reversed, a domain as it is,
// then the zone.
func ListedName(zone, subject string) string {
	if ip, err := netip.ParseAddr(subject); err == nil {
		rev, _ := dns.ReverseAddr(ip.String())
		if ip.Is4In6() { // ReverseAddr would write it as IPv4
			rev = ""
			b := ip.As16()
			for i := len(b) - 1; i >= 0; i-- {
				rev += fmt.Sprintf("%x.%x.", b[i]&0xf, b[i]>>4)
			}
		}
		subject = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rev, "in-addr.arpa."), "ip6.arpa."), ".")
	}
	return subject + "." + strings.TrimSuffix(zone, ".")
}

// List lists subject (an address or a domain) in zone with the return
// code; a reason, when not empty, is its TXT record. A refusal is the
// code a list answers it with (Spamhaus 127.255.255.254), without reason.
func (z *Zone) List(zone, subject, code, reason string) *Zone {
	name := ListedName(zone, subject)
	z.A(name, code)
	var strs []string // of at most 255 octets each (RFC 1035 section 3.3.14)
	for ; len(reason) > 255; reason = reason[255:] {
		strs = append(strs, reason[:255])
	}
	if reason != "" {
		strs = append(strs, reason)
	}
	if len(strs) > 0 {
		z.AddRR(&dns.TXT{Hdr: dns.RR_Header{Name: canonical(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: DefaultTTL}, Txt: strs})
	}
	return z
}

// ListEverything makes zone answer code for every name in it, as a broken
// list (or a domain whose registration lapsed into a wildcard) does.
func (z *Zone) ListEverything(zone, code string) *Zone {
	return z.A("*."+zone, code)
}

// Fault makes the server misbehave for every query of one name.
type Fault struct {
	kind  faultKind
	delay time.Duration
}

type faultKind uint8

const (
	faultNone faultKind = iota
	faultServFail
	faultRefused
	faultDrop
	faultTruncate
	faultWrongID
	faultDelay
)

// The faults a name can have.
var (
	ServFail = Fault{kind: faultServFail} // answer SERVFAIL
	Refused  = Fault{kind: faultRefused}  // answer REFUSED
	Drop     = Fault{kind: faultDrop}     // never answer (the client times out)
	Truncate = Fault{kind: faultTruncate} // set TC over UDP; answer in full over TCP
	WrongID  = Fault{kind: faultWrongID}  // answer with a mismatched message ID
)

// Delay answers correctly, but only after d.
func Delay(d time.Duration) Fault { return Fault{kind: faultDelay, delay: d} }

type faultKey struct {
	name  string
	qtype uint16 // 0: every type
}

// Names lists, sorted, the names (without the root dot) that own records of
// type rrtype (dns.TypeMX, ...), for tests that add to every such name.
func (z *Zone) Names(rrtype uint16) []string {
	z.mu.RLock()
	defer z.mu.RUnlock()
	var names []string
	for owner, rrs := range z.records {
		for _, rr := range rrs {
			if rr.Header().Rrtype == rrtype {
				names = append(names, strings.TrimSuffix(owner, "."))
				break
			}
		}
	}
	slices.Sort(names)
	return names
}

// SetFault gives every query for name a fault; Fault{} clears it.
func (z *Zone) SetFault(name string, f Fault) *Zone {
	return z.SetTypeFault(name, 0, f)
}

// SetTypeFault gives queries for one name and type (dns.TypeA...) a fault;
// it takes precedence over the name's fault. Fault{} clears it.
func (z *Zone) SetTypeFault(name string, qtype uint16, f Fault) *Zone {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := faultKey{canonical(name), qtype}
	if f.kind == faultNone {
		delete(z.faults, k)
	} else {
		z.faults[k] = f
	}
	return z
}

// SetLatency makes every answer without a fault of its own wait d, as
// answers from a distant server do: for benchmarks whose throughput depends
// on the DNS round trip. Zero answers at once.
func (z *Zone) SetLatency(d time.Duration) *Zone {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.latency = d
	return z
}

// canonical is the form names are kept and looked up in: lowercase, fully
// qualified, and escaped as miekg/dns unpacks a query name, so "a\032b" and
// "a\ b" are one name.
func canonical(name string) string {
	name = dns.Fqdn(name)
	buf := make([]byte, 256)
	if n, err := dns.PackDomainName(name, buf, 0, nil, false); err == nil {
		if s, _, err := dns.UnpackDomainName(buf[:n], 0); err == nil {
			name = s
		}
	}
	return strings.ToLower(name)
}

// answer builds the response to q from the zone, following CNAMEs inside it.
func (z *Zone) answer(req *dns.Msg) (*dns.Msg, Fault) {
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	z.mu.RLock()
	defer z.mu.RUnlock()
	name := canonical(q.Name)
	fault, ok := z.faults[faultKey{name, q.Qtype}]
	if !ok {
		fault, ok = z.faults[faultKey{name, 0}]
	}
	if !ok && z.latency > 0 {
		fault = Delay(z.latency)
	}
	seen := map[string]bool{}
	for !seen[name] {
		seen[name] = true
		var cname *dns.CNAME
		found := false
		rrs := z.records[name]
		if !z.exists[name] {
			rrs = z.wildcard(name)
		}
		for _, rr := range rrs {
			switch {
			case rr.Header().Rrtype == q.Qtype:
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			case rr.Header().Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if found || cname == nil {
			if !found && !z.exists[name] && len(rrs) == 0 {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = canonical(cname.Target) // a loop ends at a name already seen
	}
	if len(m.Answer) == 0 || m.Rcode == dns.RcodeNameError {
		m.Ns = append(m.Ns, &dns.SOA{
			Hdr:     dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: z.negativeTTL},
			Ns:      "ns.sandbox.test.",
			Mbox:    "hostmaster.sandbox.test.",
			Serial:  1,
			Refresh: 3600, Retry: 600, Expire: 86400,
			Minttl: z.negativeTTL,
		})
	}
	return m, fault
}

// wildcard returns the records of the closest "*." owner above name, as
// name's own (RFC 4592, without its finer points: a wildcard answers every
// name below its parent that does not exist).
func (z *Zone) wildcard(name string) []dns.RR {
	for _, i := range dns.Split(name)[1:] {
		if rrs := z.records["*."+name[i:]]; len(rrs) > 0 {
			out := make([]dns.RR, len(rrs))
			for j, rr := range rrs {
				out[j] = dns.Copy(rr)
				out[j].Header().Name = name
			}
			return out
		}
	}
	return nil
}

// SetNegativeTTL sets the SOA minimum of negative answers.
func (z *Zone) SetNegativeTTL(seconds uint32) *Zone {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.negativeTTL = seconds
	return z
}

// DNSServer serves a Zone over UDP and TCP on one loopback port and counts
// the queries it gets.
type DNSServer struct {
	// Addr is the host:port to give resolvers, e.g. "127.0.0.1:40053".
	Addr string
	zone *Zone
	udp  *dns.Server
	tcp  *dns.Server

	total  atomic.Int64
	mu     sync.Mutex
	counts map[queryKey]int
}

type queryKey struct {
	name  string
	qtype uint16
}

// StartDNS serves zone on 127.0.0.1 at a free port.
//
// Its port lies below the Linux ephemeral range (32768-60999), as the
// sandbox's SMTP port does: an outgoing connection cannot take it while a
// test restarts the server on the same address.
func StartDNS(zone *Zone) (*DNSServer, error) {
	var err error
	for try := 0; try < 50; try++ {
		var s *DNSServer
		if s, err = StartDNSAt(net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000))), zone); err == nil {
			return s, nil
		}
	}
	return nil, err
}

// StartDNSAt serves zone at addr (UDP and TCP on the same port; port 0 picks one).
func StartDNSAt(addr string, zone *Zone) (*DNSServer, error) {
	s := &DNSServer{zone: zone, counts: map[queryKey]int{}}
	var pc net.PacketConn
	var l net.Listener
	var err error
	for try := 0; try < 20; try++ { // the UDP port may be taken for TCP: pick another
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("smtptest: DNS on %s: %w", addr, err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if !strings.HasSuffix(addr, ":0") {
			return nil, fmt.Errorf("smtptest: DNS on %s: %w", addr, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("smtptest: DNS: %w", err)
	}
	// Room for thousands of queries at once: a datagram dropped for want of
	// buffer costs its resolver a whole timeout. The kernel caps the size
	// at net.core.rmem_max.
	pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	s.Addr = pc.LocalAddr().String()
	handler := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: handler}
	s.tcp = &dns.Server{Listener: l, Handler: handler}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	return s, nil
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		w.WriteMsg(m.SetRcode(req, dns.RcodeFormatError))
		return
	}
	q := req.Question[0]
	s.total.Add(1)
	s.mu.Lock()
	s.counts[queryKey{canonical(q.Name), q.Qtype}]++
	s.mu.Unlock()

	m, fault := s.zone.answer(req)
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	switch fault.kind {
	case faultDrop:
		return
	case faultServFail:
		m = new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	case faultRefused:
		m = new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	case faultWrongID:
		m.Id++
	case faultDelay:
		time.Sleep(fault.delay)
	case faultTruncate:
		if udp {
			m.Answer, m.Ns = nil, nil
			m.Truncated = true
		}
	}
	if udp { // the server does not truncate by itself
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// Queries is the number of queries answered (or dropped) so far.
func (s *DNSServer) Queries() int { return int(s.total.Load()) }

// QueryCount is the number of queries for one name and type ("example.test", dns.TypeMX).
func (s *DNSServer) QueryCount(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[queryKey{canonical(name), qtype}]
}

// ResetCounts sets every query counter to zero.
func (s *DNSServer) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total.Store(0)
	clear(s.counts)
}

// Close stops the server.
func (s *DNSServer) Close() error {
	err := s.udp.Shutdown()
	if err2 := s.tcp.Shutdown(); err == nil {
		err = err2
	}
	return err
}
