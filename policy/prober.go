package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// prober finds out whether an address accepts SMTP on the configured port.
type prober interface {
	Probe(ctx context.Context, ip netip.Addr) probeResult
}

// Outcome classifies one probe.
type Outcome uint8

// The outcomes. Accept and SMTPRefusal prove an SMTP server; Refused and
// NotSMTP prove there is none; the rest are inconclusive.
const (
	OutcomeAccept          Outcome = iota // 220 greeting
	OutcomeSMTPRefusal                    // a well-formed non-220 greeting such as 554 or 421
	OutcomeRefused                        // TCP connection refused
	OutcomeNotSMTP                        // connected, but no SMTP greeting came (garbage, or closed)
	OutcomeConnectTimeout                 // no TCP answer within probe.connect_timeout
	OutcomeGreetingTimeout                // connected, but no complete greeting within probe.greeting_timeout
	OutcomeUnreachable                    // no route to the network or host
	OutcomeBlockedLocally                 // this host's firewall forbids the connection
	OutcomeNotAllowed                     // special-purpose address outside probe.allow_networks: never dialled
	OutcomeAbandoned                      // the decision deadline came first
)

var outcomeNames = [...]string{
	OutcomeAccept:          "accepts",
	OutcomeSMTPRefusal:     "smtp-refusal",
	OutcomeRefused:         "refused",
	OutcomeNotSMTP:         "not-smtp",
	OutcomeConnectTimeout:  "connect-timeout",
	OutcomeGreetingTimeout: "greeting-timeout",
	OutcomeUnreachable:     "unreachable",
	OutcomeBlockedLocally:  "blocked-locally",
	OutcomeNotAllowed:      "not-allowed",
	OutcomeAbandoned:       "abandoned",
}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// SpeaksSMTP reports whether the outcome proves an SMTP server.
func (o Outcome) SpeaksSMTP() bool { return o == OutcomeAccept || o == OutcomeSMTPRefusal }

// NoSMTP reports whether the outcome proves there is no SMTP server.
func (o Outcome) NoSMTP() bool { return o == OutcomeRefused || o == OutcomeNotSMTP }

// probeResult is what one probe found.
type probeResult struct {
	Outcome Outcome
	// Code is the greeting's reply code, when there was one.
	Code int
	// Greeting is the first greeting line, cleaned and shortened for reports.
	Greeting string
	// Detail explains an outcome without a greeting.
	Detail string
	Took   time.Duration
}

// Summary is a short human description, e.g. "220 mx.example.com ESMTP" or
// "connection refused".
func (r probeResult) Summary() string {
	if r.Greeting != "" {
		return r.Greeting
	}
	return r.Detail
}

// ProbeConfig configures the port-25 prober.
type ProbeConfig struct {
	// Port is the only port ever probed (25 in production, a test port in sandboxes).
	Port uint16
	// ConnectTimeout bounds the TCP handshake; GreetingTimeout the wait for
	// the banner after it (keep ≥ 10s: postscreen delays banners ~6s).
	ConnectTimeout, GreetingTimeout time.Duration
	// AllowNetworks are special-purpose networks that may be probed anyway.
	AllowNetworks []netip.Prefix
	// Concurrency caps probes in flight across all evaluations.
	Concurrency int
	// MaxQueued caps the probes waiting for a slot, and QueueTimeout how
	// long one waits: beyond either the probe is dropped (inconclusive), so
	// that a flood of hostile domains with silent MX hosts cannot build an
	// ever longer queue in front of real ones.
	MaxQueued    int
	QueueTimeout time.Duration
	// MaxHosts caps the MX hosts examined per domain, MaxAddrsPerHost the
	// addresses probed per host.
	MaxHosts, MaxAddrsPerHost int
	// BlockedAfter is how many connect timeouts in a row, with no TCP answer
	// from anywhere in between, mean that outbound port 25 is blocked here.
	BlockedAfter int
}

// Limits of one greeting read: RFC 5321 section 4.5.3.1.5 allows 512-octet reply
// lines; a few continuation lines are normal, megabytes are hostile.
const (
	maxGreetingBytes = 4096
	maxGreetingLine  = 512
	quitTimeout      = time.Second
	quitFloor        = 50 * time.Millisecond
)

// smtpProber connects to port probe.port, reads the greeting, says QUIT.
type smtpProber struct {
	cfg      ProbeConfig
	dial     func(ctx context.Context, network, address string) (net.Conn, error)
	slots    chan struct{}
	egress   *egressTracker
	observer Observer
	waiting  atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
}

// newSMTPProber returns a prober for cfg.
func newSMTPProber(cfg ProbeConfig) *smtpProber {
	cfg = cfg.withDefaults()
	return &smtpProber{
		cfg:      cfg,
		dial:     (&net.Dialer{Timeout: cfg.ConnectTimeout}).DialContext,
		slots:    make(chan struct{}, cfg.Concurrency),
		egress:   &egressTracker{threshold: cfg.BlockedAfter},
		observer: nopObserver{},
	}
}

// defaultProbe is DefaultConfig's Probe.
var defaultProbe = ProbeConfig{
	Port:            25,
	ConnectTimeout:  5 * time.Second,
	GreetingTimeout: 12 * time.Second,
	Concurrency:     64,
	MaxQueued:       256,
	QueueTimeout:    10 * time.Second,
	MaxHosts:        5,
	MaxAddrsPerHost: 2,
	BlockedAfter:    10,
}

func (c ProbeConfig) withDefaults() ProbeConfig {
	d := defaultProbe
	c.Port = positive(c.Port, d.Port)
	c.ConnectTimeout = positive(c.ConnectTimeout, d.ConnectTimeout)
	c.GreetingTimeout = positive(c.GreetingTimeout, d.GreetingTimeout)
	c.Concurrency = positive(c.Concurrency, d.Concurrency)
	c.MaxQueued = positive(c.MaxQueued, d.MaxQueued)
	c.QueueTimeout = positive(c.QueueTimeout, d.QueueTimeout)
	c.MaxHosts = positive(c.MaxHosts, d.MaxHosts)
	c.MaxAddrsPerHost = positive(c.MaxAddrsPerHost, d.MaxAddrsPerHost)
	c.BlockedAfter = positive(c.BlockedAfter, d.BlockedAfter)
	return c
}

// InFlight is the number of probes connected or connecting now, and the
// most there have been at once.
func (p *smtpProber) InFlight() (now, peak int) {
	return int(p.inFlight.Load()), int(p.peak.Load())
}

// Allowed reports whether ip may be probed: an ordinary global address, or a
// special-purpose one inside probe.allow_networks.
func (p *smtpProber) Allowed(ip netip.Addr) bool {
	return specialPurpose(ip) == "" || inPrefixes(ip, p.cfg.AllowNetworks)
}

// Probe connects to ip on the configured port. It never dials an address
// that Allowed refuses.
func (p *smtpProber) Probe(ctx context.Context, ip netip.Addr) probeResult {
	if !p.Allowed(ip) {
		return probeResult{Outcome: OutcomeNotAllowed,
			Detail: fmt.Sprintf("%s is %s; not probed (see probe.allow_networks)", ip, specialPurpose(ip))}
	}
	if !p.acquire(ctx) {
		return probeResult{Outcome: OutcomeAbandoned, Detail: "no free probe slot (probe.concurrency); not probed"}
	}
	defer func() { <-p.slots }()
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for old := p.peak.Load(); n > old && !p.peak.CompareAndSwap(old, n); old = p.peak.Load() {
	}
	began := time.Now()
	r := p.probe(ctx, ip)
	r.Took = time.Since(began)
	p.egress.record(ip, r.Outcome)
	p.observer.Probe(r.Outcome, r.Took)
	return r
}

// acquire takes a probe slot, waiting within MaxQueued and QueueTimeout.
func (p *smtpProber) acquire(ctx context.Context) bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
	}
	if p.waiting.Add(1) > int64(p.cfg.MaxQueued) {
		p.waiting.Add(-1)
		return false
	}
	defer p.waiting.Add(-1)
	t := time.NewTimer(p.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (p *smtpProber) probe(ctx context.Context, ip netip.Addr) probeResult {
	conn, err := p.dial(ctx, "tcp", netip.AddrPortFrom(ip, p.cfg.Port).String())
	if err != nil {
		return classifyDialError(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(p.cfg.GreetingTimeout)
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) }) // after: it must win
	defer stop()
	br := bufio.NewReaderSize(io.LimitReader(conn, maxGreetingBytes), maxGreetingLine)
	r := readGreeting(br)
	if r.Outcome.SpeaksSMTP() && ctx.Err() == nil {
		// QUIT within what is left of the greeting time (at least a moment
		// to write it), so a probe stays within connect + greeting timeout.
		left := min(time.Until(deadline), quitTimeout)
		conn.SetDeadline(time.Now().Add(max(left, quitFloor)))
		if _, err := io.WriteString(conn, "QUIT\r\n"); err == nil {
			br.ReadSlice('\n') // the 221, so the server logs a clean QUIT
		}
	}
	return r
}

// readGreeting reads an SMTP greeting, which may span several lines
// ("220-first", "220 last"), and classifies it. Once a line has started
// with a reply code ("220 " or "220-"), the host has proved that it speaks
// SMTP: a greeting that then runs over the read limits, is cut off or
// stalls is classified by that code.
func readGreeting(br *bufio.Reader) probeResult {
	code := 0
	var first string
	for {
		line, err := br.ReadSlice('\n')
		text := strings.TrimRight(string(line), "\r\n")
		if code == 0 {
			switch {
			case replyStart(text, err == nil):
				code = int(text[0]-'0')*100 + int(text[1]-'0')*10 + int(text[2]-'0')
				first = Printable(text, 120)
			case len(text) >= 4 || err == nil || !isReplyPrefix(text):
				return probeResult{Outcome: OutcomeNotSMTP, Detail: "not an SMTP greeting: " + Printable(text, 60)}
			default: // nothing telling arrived before the error
				return greetingReadError(err)
			}
		}
		if err != nil {
			return provenGreeting(code, first, err)
		}
		if len(text) == 3 || len(text) > 3 && text[3] == ' ' { // the last line of the reply
			return provenGreeting(code, first, nil)
		}
	}
}

// replyStart reports whether text begins a reply line: a reply code and
// then ' ' or '-', or a complete line of the code alone.
func replyStart(text string, complete bool) bool {
	if len(text) < 3 || !isReplyCode([]byte(text[:3])) {
		return false
	}
	return len(text) == 3 && complete || len(text) > 3 && (text[3] == ' ' || text[3] == '-')
}

// isReplyPrefix reports whether text could still become a reply code.
func isReplyPrefix(text string) bool {
	for i := 0; i < len(text); i++ {
		if c := text[i]; c < '0' || c > '9' || i == 0 && (c < '2' || c > '5') {
			return false
		}
	}
	return true
}

// provenGreeting classifies a greeting by its reply code; err says what cut
// it short after the code had arrived.
func provenGreeting(code int, first string, err error) probeResult {
	r := probeResult{Outcome: OutcomeSMTPRefusal, Code: code, Greeting: first}
	if code == 220 {
		r.Outcome = OutcomeAccept
	}
	var ne net.Error
	switch {
	case err == nil:
	case errors.Is(err, bufio.ErrBufferFull):
		r.Detail = fmt.Sprintf("a greeting line longer than %d octets", maxGreetingLine)
	case errors.As(err, &ne) && ne.Timeout():
		r.Detail = "the greeting did not finish before the timeout"
	case errors.Is(err, io.EOF):
		r.Detail = fmt.Sprintf("the greeting was cut off or ran over %d octets", maxGreetingBytes)
	default:
		r.Detail = "the greeting was cut off: " + err.Error()
	}
	return r
}

func greetingReadError(err error) probeResult {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return probeResult{Outcome: OutcomeGreetingTimeout, Detail: "connected, but no greeting before the timeout"}
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return probeResult{Outcome: OutcomeNotSMTP, Detail: "connected, but the server closed the connection without a greeting"}
	}
	return probeResult{Outcome: OutcomeNotSMTP, Detail: "reading the greeting: " + err.Error()}
}

func classifyDialError(err error) probeResult {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return probeResult{Outcome: OutcomeRefused, Detail: "connection refused"}
	case errors.Is(err, syscall.ECONNRESET): // the handshake completed, then a reset
		return probeResult{Outcome: OutcomeNotSMTP, Detail: "connected, but the server closed the connection without a greeting"}
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return probeResult{Outcome: OutcomeBlockedLocally, Detail: "connection forbidden by this host's firewall"}
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return probeResult{Outcome: OutcomeUnreachable, Detail: "no route to the host from here"}
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT):
		return probeResult{Outcome: OutcomeUnreachable, Detail: "this host has no address of that family to connect from"}
	case errors.Is(err, context.Canceled):
		return probeResult{Outcome: OutcomeAbandoned, Detail: "probe cancelled"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return probeResult{Outcome: OutcomeConnectTimeout, Detail: "no answer to the TCP connection attempt"}
	}
	return probeResult{Outcome: OutcomeUnreachable, Detail: err.Error()}
}

func isReplyCode(b []byte) bool {
	return len(b) == 3 && '2' <= b[0] && b[0] <= '5' && allDigits(b)
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// egressTracker notices, per address family, when port 25 cannot be
// reached from where mxguard runs: many probes in a row with no TCP answer
// from anywhere (outbound port 25 blocked), or no route at all (a relay
// without IPv6). Such probes say nothing about the remote hosts.
type egressTracker struct {
	mu          sync.Mutex
	threshold   int
	consecutive [2]int // IPv4, IPv6
}

func family(ip netip.Addr) int {
	if ip.Unmap().Is4() {
		return 0
	}
	return 1
}

var familyNames = [2]string{"IPv4", "IPv6"}

func (t *egressTracker) record(ip netip.Addr, o Outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := family(ip)
	switch o {
	case OutcomeConnectTimeout, OutcomeBlockedLocally, OutcomeUnreachable:
		t.consecutive[f]++
	case OutcomeAccept, OutcomeSMTPRefusal, OutcomeRefused, OutcomeNotSMTP, OutcomeGreetingTimeout:
		t.consecutive[f] = 0
	}
}

// state reports, per address family (IPv4, IPv6), whether port 25 looks
// unreachable from here now: the view blocked takes of each family.
func (t *egressTracker) state() (v4, v6 bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.consecutive[0] >= t.threshold, t.consecutive[1] >= t.threshold
}

// blocked reports whether port 25 looks unreachable from here for every
// one of addrs' address families, and why.
func (t *egressTracker) blocked(addrs []netip.Addr) (bool, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var why []string
	for f := range t.consecutive {
		used := false
		for _, ip := range addrs {
			used = used || family(ip) == f
		}
		switch {
		case !used:
		case t.consecutive[f] < t.threshold:
			return false, ""
		default:
			why = append(why, fmt.Sprintf("outbound port 25 looks blocked here for %s: the last %d probes to MX hosts got no TCP answer or had no route",
				familyNames[f], t.consecutive[f]))
		}
	}
	return len(why) > 0, strings.Join(why, "; ")
}
