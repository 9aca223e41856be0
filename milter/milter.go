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
	"time"

	gomilter "github.com/emersion/go-milter"

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
}

// Evaluator decides; *policy.Engine is the one mxguard uses.
type Evaluator interface {
	Evaluate(ctx context.Context, req policy.Request) *policy.Report
}

// Recorder counts sessions and decisions (Prometheus in mxguard serve).
type Recorder interface {
	SessionOpened()
	SessionClosed()
	// Decision is one verdict: outcome is the verdict, or "temperror" when
	// mxguard failed open.
	Decision(r *policy.Report, outcome string)
}

// Options are the settings fixed for the life of a Milter. HeaderFrom and
// ReplyAt decide which protocol steps the MTA sends and which it waits an
// answer for; that is agreed when a connection opens, so they cannot change
// on reload.
type Options struct {
	// HeaderFrom also checks the RFC5322.From domain.
	HeaderFrom bool
	ReplyAt    Stage
	// MaxSessions caps concurrent MTA connections; more wait to be accepted.
	MaxSessions int
	// IdleTimeout drops a connection whose MTA sends nothing for this long.
	IdleTimeout time.Duration
	Log         *slog.Logger
	Recorder    Recorder
}

// Milter serves the milter protocol.
type Milter struct {
	cfg   atomic.Pointer[Config]
	opts  Options
	proto gomilter.OptProtocol
	log   *slog.Logger
	rec   Recorder
	slots chan struct{}

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*trackedConn]struct{}
	closing   bool
	sessions  sync.WaitGroup
}

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
		opts:  opts,
		log:   opts.Log,
		rec:   opts.Recorder,
		slots: make(chan struct{}, opts.MaxSessions),
		conns: map[*trackedConn]struct{}{},
	}
	m.proto = protocol(opts)
	m.cfg.Store(cfg)
	return m
}

func (m *Milter) config() *Config { return m.cfg.Load() }

// Reload makes new messages use cfg; messages in flight finish with the old one.
func (m *Milter) Reload(cfg *Config) { m.cfg.Store(cfg) }

// The actions mxguard needs: add its header, quarantine on hold, and name
// the macros it wants.
const actions = gomilter.OptAddHeader | gomilter.OptQuarantine | gomilter.OptSetSymList

// protocol asks the MTA to skip every step mxguard does not use, and to send
// without waiting for an answer (SMFIP_NR_*) the steps it never refuses:
// each is a round trip saved, on every message. The client comes from the
// MAIL FROM macros, so the connect step is skipped too. go-milter has no
// handler for SMFIC_UNKNOWN and would drop the connection: unknown commands
// are switched off as well.
func protocol(o Options) gomilter.OptProtocol {
	p := gomilter.OptNoConnect | gomilter.OptNoBody | gomilter.OptNoUnknown | gomilter.OptNoData | gomilter.OptNoHeloReply
	if o.HeaderFrom {
		p |= gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply
	} else {
		p |= gomilter.OptNoHeaders | gomilter.OptNoEOH
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
	gomilter.StageMailFrom: {"i", "j", "{client_addr}", "{client_name}", "{client_resolve}", "{auth_authen}", "{daemon_name}", "s"},
	gomilter.StageEOH:      {"i"}, // Sendmail chooses the EOM list by whether EOH has one
	gomilter.StageEOM:      {"i"},
}

// Serve answers MTA connections on ln until Shutdown.
func (m *Milter) Serve(ln net.Listener) error {
	tl := &trackingListener{Listener: ln, m: m}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter {
			s := &session{m: m, conn: tl.last}
			tl.last = nil
			return s
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
	// last is the connection Accept just returned. go-milter's Serve calls
	// NewMilter right after Accept, in the same goroutine, and mxguard never
	// answers in a way that makes go-milter call it again: so the new session
	// can take it.
	last *trackedConn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	m := l.m
	m.slots <- struct{}{} // at MaxSessions, wait here: the MTA's connect timeout applies
	m.sessions.Add(1)     // before Accept, so that Shutdown's Wait cannot miss it
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			tc := &trackedConn{Conn: c, m: m, in: bufio.NewReaderSize(c, 4096)}
			m.mu.Lock()
			m.conns[tc] = struct{}{}
			m.mu.Unlock()
			m.rec.SessionOpened()
			l.last = tc
			return tc, nil
		}
		if errors.Is(err, net.ErrClosed) {
			<-m.slots
			m.sessions.Done()
			return nil, err
		}
		// Out of file descriptors and the like: wait and retry, as net/http
		// does; returning would end go-milter's Serve and the daemon.
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		m.log.Warn("accepting a milter connection failed; retrying", "error", err, "in", backoff)
		time.Sleep(backoff)
	}
}

type trackedConn struct {
	net.Conn
	m        *Milter
	in       *bufio.Reader // go-milter reads a packet in two small reads; one syscall serves several packets
	deadline time.Time     // when the idle deadline was last moved; zero: none set
	busy     atomic.Bool   // inside a transaction: the MTA is silent during DATA
	once     sync.Once
}

// Read serves go-milter from the buffer, and keeps the idle deadline (go-milter
// sets none) moving while the MTA talks. Inside a transaction there is none:
// the MTA sends nothing while the client uploads the message (mxguard skips
// headers and body), however long that takes.
func (c *trackedConn) Read(b []byte) (int, error) {
	if t := c.m.opts.IdleTimeout; t > 0 && c.in.Buffered() == 0 {
		switch now := time.Now(); {
		case c.busy.Load():
			if !c.deadline.IsZero() {
				c.Conn.SetReadDeadline(time.Time{})
				c.deadline = time.Time{}
			}
		case now.Sub(c.deadline) > t/16: // a timer reset per packet is waste
			c.Conn.SetReadDeadline(now.Add(t))
			c.deadline = now
		}
	}
	return c.in.Read(b)
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		m := c.m
		m.mu.Lock()
		delete(m.conns, c)
		m.mu.Unlock()
		<-m.slots
		m.rec.SessionClosed()
		m.sessions.Done()
	})
	return err
}

type nopRecorder struct{}

func (nopRecorder) SessionOpened()                  {}
func (nopRecorder) SessionClosed()                  {}
func (nopRecorder) Decision(*policy.Report, string) {}
