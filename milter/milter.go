// Package milter adapts the policy engine to the milter protocol (Postfix,
// Sendmail) on top of github.com/emersion/go-milter: MTA macros and commands
// in, headers, quarantine and SMTP replies out. The decisions themselves are
// the engine's.
package milter

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/policy"
)

// Stage is where a defer or reject is answered.
type Stage uint8

// MAIL FROM or the first RCPT TO. At RCPT the evaluation, started at MAIL
// FROM, overlaps the client's round trip, and clients handle RCPT refusals
// best.
const (
	StageRcpt Stage = iota
	StageMail
)

// Config is what sessions need. Reload swaps it; a message keeps the Config
// it started with.
type Config struct {
	Engine          Evaluator
	HeaderName      string
	DecisionTimeout time.Duration
	// NonSMTPAction is what a defer or reject verdict becomes for mail that
	// did not come over SMTP (Postfix non_smtpd_milters: sendmail(1),
	// pickup), which cannot be refused per recipient and must not stay in
	// the queue: Hold, Flag or Reject (bounced to the sender).
	NonSMTPAction policy.Verdict
}

// Evaluator decides; *policy.Engine is the one mxguard uses. The message
// methods serve Options.Message.
type Evaluator interface {
	// EvaluateCached decides from the caches alone, without waiting: nil
	// when a fact is not cached. EvaluateCold then decides, asking the
	// network for what is not cached.
	EvaluateCached(ctx context.Context, req policy.Request) *policy.Report
	EvaluateCold(ctx context.Context, req policy.Request) *policy.Report
	NewMessage() *policy.Message
	EvaluateMessage(ctx context.Context, envelope *policy.Report, req policy.Request, m *policy.Message) *policy.Report
}

// Recorder counts sessions and decisions (Prometheus in mxguard serve).
type Recorder interface {
	SessionOpened()
	SessionClosed()
	// Decision is one verdict: outcome is the verdict, or "temperror" when
	// mxguard failed open.
	Decision(r *policy.Report, outcome string)
	// ConnectionDropped counts a connection closed by mxguard: reason is
	// "peer" (not allowed to hold a session) or "evicted" (closed at
	// MaxSessions to make room).
	ConnectionDropped(front, reason string)
}

// PeerCheck tells whether the peer of a new connection may hold a session
// (milter.allow_users), before it takes a slot; peer names it for the log
// either way.
type PeerCheck func(c net.Conn) (peer string, err error)

// Options are the settings fixed for the life of a Milter. HeaderFrom and
// ReplyAt decide which protocol steps the MTA sends and which it waits an
// answer for; that is agreed when a connection opens, so they cannot change
// on reload.
type Options struct {
	// HeaderFrom also checks the RFC5322.From domain.
	HeaderFrom bool
	// Message asks the MTA for the whole message (checks.message): its
	// header and body are streamed into the message checks.
	Message bool
	ReplyAt Stage
	// MaxSessions caps concurrent MTA connections. At the cap, the session
	// silent longest is closed to make room; only when every session is
	// waiting for mxguard does a new one wait.
	MaxSessions int
	// IdleTimeout drops a connection whose MTA sends nothing for this long
	// between transactions.
	IdleTimeout time.Duration
	// TransactionTimeout drops a connection whose transaction (MAIL FROM to
	// end of message) has not ended after this long: the MTA is silent
	// while a client uploads the message, but not for ever.
	TransactionTimeout time.Duration
	// AllowPeer, when set, refuses connections from peers that may not
	// hold a session; nil admits everyone.
	AllowPeer PeerCheck
	// Seen, when set, is given every report a message was decided on
	// (for the milter: the envelope sender's and each From domain's): the
	// domain inventory. It must not block.
	Seen     func(*policy.Report)
	Log      *slog.Logger
	Recorder Recorder
}

// Milter serves the milter protocol.
type Milter struct {
	cfg   atomic.Pointer[Config]
	opts  Options
	proto gomilter.OptProtocol
	log   *slog.Logger
	rec   Recorder
	slots *peers.Slots

	refusals *peers.LogThrottle

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*trackedConn]struct{}
	closing   bool
	sessions  sync.WaitGroup
}

// refusalLogEvery is how often a refused or evicted peer is logged; the
// line counts what was held back in between.
const refusalLogEvery = time.Minute

// New returns a Milter for cfg.
func New(cfg *Config, opts Options) *Milter {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 1024
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	m := &Milter{
		opts:     opts,
		log:      opts.Log,
		rec:      opts.Recorder,
		slots:    peers.NewSlots(opts.MaxSessions),
		conns:    map[*trackedConn]struct{}{},
		refusals: peers.NewLogThrottle(refusalLogEvery),
	}
	m.proto = protocol(opts)
	m.cfg.Store(cfg)
	return m
}

func (m *Milter) config() *Config { return m.cfg.Load() }

// Reload makes new messages use cfg; messages in flight finish with the old one.
func (m *Milter) Reload(cfg *Config) { m.cfg.Store(cfg) }

// The actions mxguard needs: add its header, remove forged copies of it,
// quarantine on hold, and name the macros it wants.
const actions = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptSetSymList

// protocol asks the MTA to skip every step mxguard does not use, and to send
// without waiting for an answer (SMFIP_NR_*) the steps it never refuses:
// each is a round trip saved, on every message. The client comes from the
// MAIL FROM macros, so the connect step is skipped too. Headers are needed
// to find forged copies of mxguard's own header; they are never refused.
// The message checks need the body too, and each header field's value
// exactly as it is signed, leading space included (SMFIP_HDR_LEADSPC).
func protocol(o Options) gomilter.OptProtocol {
	p := gomilter.OptNoConnect | gomilter.OptNoUnknown | gomilter.OptNoData |
		gomilter.OptNoHeloReply | gomilter.OptNoHeaderReply
	switch {
	case o.Message:
		p |= gomilter.OptNoEOHReply | gomilter.OptNoBodyReply | gomilter.OptHeaderLeadingSpace
	case o.HeaderFrom:
		p |= gomilter.OptNoBody | gomilter.OptNoEOHReply
	default:
		p |= gomilter.OptNoBody | gomilter.OptNoEOH
	}
	if o.ReplyAt == StageMail {
		p |= gomilter.OptNoRcptTo // the answer is given at MAIL FROM: recipients do not matter
	} else {
		p |= gomilter.OptNoMailReply
	}
	return p
}

// symbols are the macros asked for per stage. Postfix sends nothing for a
// stage not named; everything about the client comes with MAIL FROM (go-milter
// keeps only the latest macro packet). "s" is Sendmail's HELO name.
var symbols = map[gomilter.Stage][]string{
	gomilter.StageMailFrom: {"i", "j", "{client_addr}", "{client_port}", "{client_name}", "{client_resolve}", "{auth_authen}", "{daemon_name}", "s"},
	gomilter.StageEOH:      {"i"}, // Sendmail chooses the EOM list by whether EOH has one
	gomilter.StageEOM:      {"i"},
}

// Serve answers MTA connections on ln until Shutdown.
func (m *Milter) Serve(ln net.Listener) error {
	tl := &trackingListener{Listener: ln, m: m}
	srv := &gomilter.Server{
		NewConnMilter: func(c net.Conn) gomilter.Milter {
			// go-milter asks again after a final answer (one it gave itself
			// to a malformed command): the connection keeps its session.
			tc := c.(*trackedConn)
			if tc.session == nil {
				tc.session = &session{m: m, conn: tc}
			}
			return tc.session
		},
		Actions:  actions,
		Protocol: m.proto,
		SymList:  symbols,
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		ln.Close()
		return gomilter.ErrServerClosed
	}
	m.listeners = append(m.listeners, ln)
	m.mu.Unlock()
	err := srv.Serve(tl)
	if m.isClosing() {
		return gomilter.ErrServerClosed
	}
	return err
}

func (m *Milter) isClosing() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closing
}

// Shutdown stops accepting connections and waits for open sessions to end;
// when ctx ends first, it closes them (the MTA then applies its
// milter_default_action to what follows).
func (m *Milter) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.slots.Close()
	m.closing = true
	listeners := m.listeners
	m.mu.Unlock()
	var err error
	for _, ln := range listeners { // not Server.Close: it sets a flag Serve reads unguarded
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	done := make(chan struct{})
	go func() {
		m.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.mu.Lock()
		for c := range m.conns {
			c.Conn.Close()
		}
		m.mu.Unlock()
		<-done
		err = errors.Join(err, ctx.Err())
	}
	return err
}

// ActiveSessions is the number of open MTA connections.
func (m *Milter) ActiveSessions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// trackingListener caps, tracks and times out the connections go-milter serves.
type trackingListener struct {
	net.Listener
	m *Milter
}

func (l *trackingListener) Accept() (net.Conn, error) {
	m := l.m
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if err != nil {
			// Out of file descriptors and the like: wait and retry, as net/http
			// does; returning would end go-milter's Serve and the daemon.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accepting a milter connection failed; retrying", "error", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !m.admit(c) {
			continue
		}
		if !m.slots.Take(m.evict) {
			c.Close()
			return nil, net.ErrClosed
		}
		tc := &trackedConn{Conn: c, m: m, in: bufio.NewReaderSize(c, 4096)}
		tc.silence = m.slots.Track("", func() { tc.Close() })
		if tcp, ok := c.(*net.TCPConn); ok {
			tc.raw, _ = tcp.SyscallConn()
		}
		// Counted under the lock Shutdown takes before it waits, so that
		// its Wait cannot miss the session.
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			m.slots.Release()
			c.Close()
			return nil, net.ErrClosed
		}
		m.sessions.Add(1)
		m.conns[tc] = struct{}{}
		m.mu.Unlock()
		m.rec.SessionOpened()
		return tc, nil
	}
}

// admit checks a new connection's peer before it takes a slot; a refused
// one is closed at once.
func (m *Milter) admit(c net.Conn) bool {
	if m.opts.AllowPeer == nil {
		return true
	}
	peer, err := m.opts.AllowPeer(c)
	if err == nil {
		return true
	}
	c.Close()
	m.rec.ConnectionDropped("milter", "peer")
	if ok, suppressed := m.refusals.Allow(peer, time.Now()); ok {
		m.log.Warn("refused a milter connection: only milter.allow_users may hold a session",
			"peer", peer, "reason", err, "refused_since_last_line", suppressed)
	}
	return false
}

// evict closes the session silent longest, at MaxSessions, to make room
// for a new one; false when every session is waiting for mxguard.
func (m *Milter) evict() bool {
	return m.slots.Evict(func(_ *peers.Silence, silent time.Duration) {
		m.rec.ConnectionDropped("milter", "evicted")
		if ok, suppressed := m.refusals.Allow("evicted", time.Now()); ok {
			m.log.Warn("milter.max_sessions reached: closed the session silent longest to make room",
				"silent_for", silent.Round(time.Millisecond), "closed_since_last_line", suppressed)
		}
	})
}

type trackedConn struct {
	net.Conn
	m       *Milter
	session *session        // set by go-milter's first NewConnMilter, then read only in the session goroutine
	in      *bufio.Reader   // go-milter reads a packet in two small reads; one syscall serves several packets
	raw     syscall.RawConn // a TCP connection's socket, for TCP_QUICKACK; nil for unix sockets
	// The session goroutine, which also reads, owns the fields below.
	inTransaction bool
	transactionBy time.Time      // when the open transaction must end; zero: no limit
	deadline      time.Time      // the read deadline set last
	idleMoved     time.Time      // when the idle deadline was last moved; zero: it is not the one set
	silence       *peers.Silence // its place among the sessions waiting for their MTA
	once          sync.Once
	// content is the message being streamed into the message checks, for
	// Close to stop when the connection ends inside a transaction.
	content atomic.Pointer[policy.Message]
}

// Read serves go-milter from the buffer, and keeps a read deadline (go-milter
// sets none): between transactions the idle timeout, moved while the MTA
// talks; inside one, the transaction's own end, since the MTA is silent
// while the client uploads the message.
func (c *trackedConn) Read(b []byte) (int, error) {
	if c.in.Buffered() == 0 {
		now, idle := time.Now(), c.m.opts.IdleTimeout
		c.silence.Waiting()
		defer c.silence.Busy()
		switch {
		case c.inTransaction:
			if c.deadline != c.transactionBy {
				c.setDeadline(c.transactionBy)
				c.idleMoved = time.Time{}
			}
		case idle > 0 && now.Sub(c.idleMoved) > idle/16: // a timer reset per packet is waste
			c.setDeadline(now.Add(idle))
			c.idleMoved = now
		}
		if c.inTransaction {
			c.quickAck()
		}
	}
	return c.in.Read(b)
}

// quickAck makes the kernel acknowledge what arrives next at once. Inside a
// transaction the MTA sends header fields without waiting for answers
// (SMFIP_NR_HDR); with nothing to send back, a delayed ACK (40 ms on Linux)
// would hold up its next write under Nagle's algorithm, once per message.
// Linux forgets the setting as it goes, so it is set before every read.
func (c *trackedConn) quickAck() {
	if c.raw != nil {
		c.raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) })
	}
}

func (c *trackedConn) setDeadline(t time.Time) {
	c.Conn.SetReadDeadline(t)
	c.deadline = t
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	if content := c.content.Swap(nil); content != nil {
		content.Discard()
	}
	c.once.Do(func() {
		m := c.m
		c.silence.Busy()
		m.mu.Lock()
		delete(m.conns, c)
		m.mu.Unlock()
		m.slots.Release()
		m.rec.SessionClosed()
		m.sessions.Done()
	})
	return err
}

type nopRecorder struct{}

func (nopRecorder) SessionOpened()                   {}
func (nopRecorder) SessionClosed()                   {}
func (nopRecorder) Decision(*policy.Report, string)  {}
func (nopRecorder) ConnectionDropped(string, string) {}
