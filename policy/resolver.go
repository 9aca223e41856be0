package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver looks up one (name, type) and returns the answer with its TTL.
// Implementations: the network client (dnsClient) and the cache in front of it.
type resolver interface {
	Lookup(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error)
}

// answerKind separates a positive answer from the two negative ones.
type answerKind uint8

// The kinds of answer. Errors (SERVFAIL, timeout) are not answers: they come
// back as *dnsError.
const (
	kindFound    answerKind = iota
	kindNXDomain            // the name does not exist
	kindNoData              // the name exists but has no records of this type
)

func (k answerKind) String() string {
	switch k {
	case kindFound:
		return "found"
	case kindNXDomain:
		return "NXDOMAIN"
	default:
		return "NODATA"
	}
}

// mxHost is one MX record.
type mxHost struct {
	Pref uint16
	Host string // lowercase, no trailing dot; "" for the null MX target "."
}

// dnsAnswer is a DNS answer reduced to what the checks use. It is immutable once
// returned: the cache hands the same value to every caller.
type dnsAnswer struct {
	Kind answerKind
	// Aliases lists the CNAME targets followed from the query name, in order.
	Aliases []string
	MX      []mxHost     // MX answers, sorted by preference then host
	Addrs   []netip.Addr // A or AAAA answers
	Names   []string     // PTR answers, lowercase, no trailing dot
	TXT     []string     // TXT answers, each record's strings joined (RFC 7208 section 3.3)
	// TTL is the smallest TTL of the records used, or for a negative answer
	// the SOA minimum (RFC 2308); TTLKnown is false when the server gave none.
	TTL      time.Duration
	TTLKnown bool
}

// Limits on what one answer may carry, so hostile zones cost bounded memory.
const (
	maxMXRecords   = 64
	maxAddrRecords = 32
	maxPTRRecords  = 16
	maxTXTRecords  = 16
	maxTXTLength   = 4096 // octets of one record's joined strings; longer ones are cut
)

// dnsErrKind classifies a failed lookup.
type dnsErrKind uint8

// Kinds of DNS failure. All but errInvalidName are temporary as far as
// checks go; that one is the name's own and is never sent.
const (
	errServFail    dnsErrKind = iota // SERVFAIL, REFUSED or another error rcode
	errTimeout                       // no answer within the deadline
	errBadResponse                   // malformed, mismatched or truncated beyond repair
	errCNAMELoop                     // CNAME loop or chain too long
	errNetwork                       // the resolver could not be reached
	errInvalidName                   // no query can carry the name (RFC 1035 section 2.3.4)
)

// dnsError is a lookup that produced no answer.
type dnsError struct {
	Kind   dnsErrKind
	Name   string
	Type   uint16
	Server string
	Err    error
}

func (e *dnsError) Error() string {
	where := ""
	if e.Server != "" {
		where = " from " + e.Server
	}
	return fmt.Sprintf("%s %s: %v%s", dns.TypeToString[e.Type], e.Name, e.Err, where)
}

func (e *dnsError) Unwrap() error { return e.Err }

// ResolverConfig configures the DNS client.
type ResolverConfig struct {
	// Servers are recursive resolvers as host:port; empty means /etc/resolv.conf.
	Servers []string
	// Timeout bounds one attempt at one server.
	Timeout time.Duration
	// Attempts is the number of tries, rotating over Servers.
	Attempts int
	// MaxCNAMEDepth bounds CNAME chains.
	MaxCNAMEDepth int
	// UDPSize is the EDNS0 buffer size advertised (RFC 6891; 1232 avoids fragmentation).
	UDPSize uint16
}

// dnsClient queries recursive resolvers over UDP with EDNS0, retries over TCP
// on truncation, chases CNAMEs and keeps NXDOMAIN, NODATA and errors apart.
// It is used instead of net.Resolver, which hides TTLs, CNAMEs and IP-literal
// MX targets, and which /etc/hosts can override.
type dnsClient struct {
	cfg      ResolverConfig
	udp      *dns.Client
	tcp      *dns.Client
	observer Observer
}

// newDNSClient returns a client for cfg, reading /etc/resolv.conf when cfg
// names no servers.
func newDNSClient(cfg ResolverConfig) (*dnsClient, error) {
	if len(cfg.Servers) == 0 {
		servers, err := systemResolvers("/etc/resolv.conf")
		if err != nil {
			return nil, err
		}
		cfg.Servers = servers
	}
	cfg.Servers = slices.Clone(cfg.Servers)
	for i, s := range cfg.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			cfg.Servers[i] = net.JoinHostPort(s, "53")
		}
	}
	cfg = cfg.withDefaults()
	return &dnsClient{
		cfg:      cfg,
		udp:      &dns.Client{Net: "udp", Timeout: cfg.Timeout, UDPSize: cfg.UDPSize},
		tcp:      &dns.Client{Net: "tcp", Timeout: cfg.Timeout},
		observer: nopObserver{},
	}, nil
}

// defaultResolver is DefaultConfig's Resolver.
var defaultResolver = ResolverConfig{Timeout: 2 * time.Second, Attempts: 2, MaxCNAMEDepth: 8, UDPSize: 1232}

func (c ResolverConfig) withDefaults() ResolverConfig {
	d := defaultResolver
	c.Timeout = positive(c.Timeout, d.Timeout)
	c.Attempts = positive(c.Attempts, d.Attempts)
	c.MaxCNAMEDepth = positive(c.MaxCNAMEDepth, d.MaxCNAMEDepth)
	c.UDPSize = positive(c.UDPSize, d.UDPSize)
	return c
}

// systemResolvers reads the nameservers of a resolv.conf file.
func systemResolvers(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading resolvers: %w", err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("reading resolvers: no nameserver in %s", path)
	}
	servers := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		servers[i] = net.JoinHostPort(s, cc.Port)
	}
	return servers, nil
}

// Servers returns the resolvers in use.
func (c *dnsClient) Servers() []string { return slices.Clone(c.cfg.Servers) }

// Lookup resolves name/qtype, following CNAMEs.
func (c *dnsClient) Lookup(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	qname, err := queryName(name)
	if err != nil {
		return nil, &dnsError{Kind: errInvalidName, Name: name, Type: qtype, Err: err}
	}
	ans := &dnsAnswer{}
	seen := map[string]bool{qname: true}
	for {
		msg, server, err := c.exchange(ctx, qname, qtype)
		if err != nil {
			err.Name = name
			return nil, err
		}
		next, done, perr := parseResponse(msg, qname, qtype, ans, seen, c.cfg.MaxCNAMEDepth)
		if perr != nil {
			return nil, &dnsError{Kind: errCNAMELoop, Name: name, Type: qtype, Server: server, Err: perr}
		}
		if done {
			return ans, nil
		}
		qname = next // the chain left this answer before reaching data: ask for its end
	}
}

// queryName is name as the answer will carry it: lowercase, fully qualified,
// escaped as miekg/dns unpacks names (a space comes back as "\ "), so the
// question and the answer's names compare equal.
func queryName(name string) (string, error) {
	wire := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), wire, 0, nil, false)
	if err != nil || n > 255 {
		return "", errors.New("not a name DNS can carry (an empty label, a label over 63 octets, or over 255 octets in all)")
	}
	s, _, err := dns.UnpackDomainName(wire[:n], 0)
	if err != nil {
		return "", err
	}
	return strings.ToLower(s), nil
}

// exchange sends one query, rotating over servers and retrying over TCP when
// the UDP answer is truncated.
func (c *dnsClient) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, string, *dnsError) {
	q := new(dns.Msg)
	q.SetQuestion(qname, qtype)
	q.SetEdns0(c.cfg.UDPSize, false)
	var last *dnsError
	start := int(q.Id) % len(c.cfg.Servers)
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		if ctx.Err() != nil {
			break
		}
		server := c.cfg.Servers[(start+attempt)%len(c.cfg.Servers)]
		began := time.Now()
		r, err := c.exchangeOnce(ctx, q, server)
		if err == nil && r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			err = &dnsError{Kind: errServFail, Type: qtype, Server: server, Err: errors.New(dns.RcodeToString[r.Rcode])}
		}
		c.observer.DNSQuery(qtype, queryOutcome(r, err), time.Since(began))
		if err == nil {
			return r, server, nil
		}
		last = err
		q.Id = dns.Id() // a fresh ID per attempt, so a late answer cannot match
	}
	if last == nil {
		last = &dnsError{Kind: errTimeout, Type: qtype, Err: errors.New("no answer before the deadline")}
	}
	return nil, "", last
}

func (c *dnsClient) exchangeOnce(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, *dnsError) {
	r, _, err := c.udp.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		r, _, err = c.tcp.ExchangeContext(ctx, q, server)
		if err == nil && r.Truncated {
			err = errors.New("truncated answer over TCP")
		}
	}
	if err != nil {
		return nil, classifyNetError(err, q.Question[0].Qtype, server)
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || !r.Response {
		return nil, &dnsError{Kind: errBadResponse, Type: q.Question[0].Qtype, Server: server,
			Err: errors.New("answer does not match the question")}
	}
	return r, nil
}

// queryOutcome names an attempt's result for metrics.
func queryOutcome(r *dns.Msg, err *dnsError) string {
	switch {
	case err == nil:
		return strings.ToLower(dns.RcodeToString[r.Rcode])
	case err.Kind == errServFail:
		return strings.ToLower(err.Err.Error())
	case err.Kind == errTimeout:
		return "timeout"
	case err.Kind == errBadResponse:
		return "bad-response"
	}
	return "network-error"
}

func classifyNetError(err error, qtype uint16, server string) *dnsError {
	kind := errNetwork
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.As(err, &ne) && ne.Timeout():
		kind = errTimeout
		err = errors.New("timeout")
	case errors.Is(err, dns.ErrId), errors.Is(err, dns.ErrShortRead), errors.Is(err, dns.ErrBuf),
		errors.Is(err, dns.ErrRdata), strings.Contains(err.Error(), "truncated"),
		strings.Contains(err.Error(), "overflow"), strings.HasPrefix(err.Error(), "dns: "):
		kind = errBadResponse
	}
	return &dnsError{Kind: kind, Type: qtype, Server: server, Err: err}
}

// parseResponse folds one response into ans. It follows the CNAME chain from
// qname inside the answer section and returns the name still to ask for when
// the chain ends without data, or done when the answer is complete.
func parseResponse(r *dns.Msg, qname string, qtype uint16, ans *dnsAnswer, seen map[string]bool, maxDepth int) (next string, done bool, err error) {
	owner := qname
	minTTL := uint32(0)
	haveTTL := false
	noteTTL := func(t uint32) {
		if !haveTTL || t < minTTL {
			minTTL, haveTTL = t, true
		}
	}
	for {
		var target string
		for _, rr := range r.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
				target = strings.ToLower(c.Target)
				noteTTL(c.Hdr.Ttl)
				break
			}
		}
		if target == "" || qtype == dns.TypeCNAME {
			break
		}
		if seen[target] {
			return "", false, fmt.Errorf("CNAME loop at %s", canonicalName(target))
		}
		seen[target] = true
		ans.Aliases = append(ans.Aliases, canonicalName(target))
		if len(ans.Aliases) > maxDepth {
			return "", false, fmt.Errorf("CNAME chain longer than %d", maxDepth)
		}
		owner = target
	}
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != qtype || !strings.EqualFold(rr.Header().Name, owner) {
			continue
		}
		switch v := rr.(type) {
		case *dns.MX:
			// All of them (a message holds a bounded number): the most
			// preferred are kept after sorting, below.
			ans.MX = append(ans.MX, mxHost{Pref: v.Preference, Host: canonicalName(v.Mx)})
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(v.A.To4()); ok && len(ans.Addrs) < maxAddrRecords {
				ans.Addrs = append(ans.Addrs, ip)
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(v.AAAA); ok && len(ip.AsSlice()) == 16 && len(ans.Addrs) < maxAddrRecords {
				ans.Addrs = append(ans.Addrs, ip)
			}
		case *dns.PTR:
			if len(ans.Names) < maxPTRRecords {
				ans.Names = append(ans.Names, canonicalName(v.Ptr))
			}
		case *dns.TXT:
			if len(ans.TXT) < maxTXTRecords {
				txt := txtOctets(strings.Join(v.Txt, ""))
				ans.TXT = append(ans.TXT, strings.Clone(txt[:min(len(txt), maxTXTLength)]))
			}
		default:
			continue
		}
		noteTTL(rr.Header().Ttl)
	}
	if len(ans.MX) > 0 {
		slices.SortFunc(ans.MX, func(a, b mxHost) int {
			if a.Pref != b.Pref {
				return int(a.Pref) - int(b.Pref)
			}
			return strings.Compare(a.Host, b.Host)
		})
		ans.MX = slices.Compact(ans.MX)
		if len(ans.MX) > maxMXRecords {
			ans.MX = slices.Clone(ans.MX[:maxMXRecords]) // let the rest be freed
		}
	}
	switch {
	case len(ans.MX)+len(ans.Addrs)+len(ans.Names)+len(ans.TXT) > 0:
		ans.Kind = kindFound
	case r.Rcode == dns.RcodeNameError:
		ans.Kind = kindNXDomain
	case owner != qname && !answersFor(r, owner):
		// The chain points outside what this server answered: ask for its end.
		mergeTTL(ans, minTTL, haveTTL)
		return owner, false, nil
	default:
		ans.Kind = kindNoData
	}
	if ans.Kind != kindFound {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				noteTTL(min(soa.Minttl, soa.Hdr.Ttl)) // RFC 2308 section 5
			}
		}
	}
	mergeTTL(ans, minTTL, haveTTL)
	return "", true, nil
}

// txtOctets undoes miekg/dns's escaping of TXT strings ("\X", "\DDD"): a
// record is octets, and checks read it so.
func txtOctets(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			c = s[i]
			if i+2 < len(s) && isDigit(c) && isDigit(s[i+1]) && isDigit(s[i+2]) {
				c = (c-'0')*100 + (s[i+1]-'0')*10 + s[i+2] - '0'
				i += 2
			}
		}
		b = append(b, c)
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// answersFor reports whether the response speaks for name: it has records
// owned by it, or a negative answer whose authority covers it.
func answersFor(r *dns.Msg, name string) bool {
	for _, rr := range r.Answer {
		if strings.EqualFold(rr.Header().Name, name) {
			return true
		}
	}
	for _, rr := range r.Ns {
		if _, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(strings.ToLower(rr.Header().Name), name) {
			return true
		}
	}
	return false
}

func mergeTTL(ans *dnsAnswer, ttl uint32, have bool) {
	if !have {
		return
	}
	d := time.Duration(ttl) * time.Second
	if !ans.TTLKnown || d < ans.TTL {
		ans.TTL, ans.TTLKnown = d, true
	}
}

// reverseName returns the in-addr.arpa / ip6.arpa name for ip.
func reverseName(ip netip.Addr) string {
	name, _ := dns.ReverseAddr(ip.Unmap().String())
	return name
}
