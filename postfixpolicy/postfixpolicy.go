// Package postfixpolicy is mxguard's second front end: the Postfix policy
// delegation protocol (SMTPD_POLICY_README), on the same engine as the
// milter. Postfix keeps one connection per smtpd process and asks once per
// recipient; there is no per-session connect, negotiation or end of
// message, which makes it much cheaper than a milter. It cannot remove
// headers or see the message, so checks.header_from and the removal of
// forged headers need the milter.
package postfixpolicy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/policy"
)

// Config is what connections need. Reload swaps it; a request keeps the
// Config it started with.
type Config struct {
	Engine          Evaluator
	HeaderName      string
	DecisionTimeout time.Duration
}

// Evaluator decides; *policy.Engine is the one mxguard uses.
type Evaluator interface {
	Evaluate(ctx context.Context, req policy.Request) *policy.Report
}

// Recorder counts decisions and dropped connections (Prometheus in mxguard
// serve).
type Recorder interface {
	Decision(r *policy.Report, outcome string)
	// ConnectionDropped counts a connection closed by mxguard: reason is
	// "peer" (not allowed), "evicted" (closed at MaxConns to make room) or
	// "malformed".
	ConnectionDropped(front, reason string)
}

// PeerCheck tells whether the peer of a new connection may use the service
// (policy_service.allow_users); peer names it for the log either way.
type PeerCheck func(c net.Conn) (peer string, err error)

// Options are fixed for the life of a Server.
type Options struct {
	// MaxConns caps concurrent connections (Postfix opens one per smtpd
	// process). At the cap, the connection idle longest is closed to make
	// room: Postfix reconnects when it needs to, while a new connection
	// that waited would see Postfix's own timeout pass.
	MaxConns int
	// IdleTimeout closes a connection that sends no request for this long;
	// Postfix reconnects when it needs to.
	IdleTimeout time.Duration
	// AllowPeer, when set, refuses connections from peers that may not use
	// the service; nil admits everyone.
	AllowPeer PeerCheck
	// Seen, when set, is given every report a message was decided on
	// (for the milter: the envelope sender's and each From domain's): the
	// domain inventory. It must not block.
	Seen     func(*policy.Report)
	Log      *slog.Logger
	Recorder Recorder
}

// Bounds on what a client may send: Postfix's requests are a few dozen
// short attributes.
const (
	maxLine       = 4096
	maxAttributes = 100
	maxRequest    = 64 << 10
	// requestTimeout is how soon a request must arrive whole once it has
	// begun: Postfix writes one in a single write, and gives up on the
	// answer after its own timeout (10s in configs/postfix).
	requestTimeout = 5 * time.Second
	// logEvery is how often a peer's refusals or malformed requests are
	// logged; the line counts what was held back in between.
	logEvery = time.Minute
)

// Server answers policy requests.
type Server struct {
	cfg   atomic.Pointer[Config]
	opts  Options
	slots *peers.Slots

	throttle *peers.LogThrottle

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// New returns a Server for cfg.
func New(cfg *Config, opts Options) *Server {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{opts: opts, slots: peers.NewSlots(opts.MaxConns), conns: map[*conn]struct{}{},
		throttle: peers.NewLogThrottle(logEvery)}
	s.cfg.Store(cfg)
	return s
}

// Reload makes new requests use cfg.
func (s *Server) Reload(cfg *Config) { s.cfg.Store(cfg) }

func (s *Server) config() *Config { return s.cfg.Load() }

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = errors.New("postfixpolicy: server closed")

// Serve answers connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.opts.Log.Warn("accepting a policy connection failed; retrying", "error", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		peer, err := s.admit(nc)
		if err != nil {
			continue
		}
		if !s.slots.Take(s.evict) {
			nc.Close()
			return ErrServerClosed
		}
		c := &conn{s: s, net: nc, peer: peer, in: bufio.NewReaderSize(nc, maxLine)}
		c.idle = s.slots.Track(peer, c.close)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			s.slots.Release()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// admit checks a new connection's peer before it takes a slot; a refused
// one is closed at once. It returns what the peer is known by in the log.
func (s *Server) admit(nc net.Conn) (string, error) {
	if s.opts.AllowPeer == nil {
		return peers.Address(nc), nil
	}
	peer, err := s.opts.AllowPeer(nc)
	if err == nil {
		return peer, nil
	}
	nc.Close()
	s.dropped("peer")
	if ok, suppressed := s.throttle.Allow(peer, time.Now()); ok {
		s.opts.Log.Warn("refused a policy connection: only policy_service.allow_users may use it",
			"peer", peer, "reason", err, "refused_since_last_line", suppressed)
	}
	return peer, err
}

func (s *Server) dropped(reason string) {
	if s.opts.Recorder != nil {
		s.opts.Recorder.ConnectionDropped("policy", reason)
	}
}

// evict closes the connection idle longest, at MaxConns, to make room for
// a new one; false when every connection is being answered.
func (s *Server) evict() bool {
	return s.slots.Evict(func(x *peers.Silence, idle time.Duration) {
		s.dropped("evicted")
		if ok, suppressed := s.throttle.Allow("evicted", time.Now()); ok {
			s.opts.Log.Warn("policy_service.max_connections reached: closed the connection idle longest to make room",
				"peer", x.Peer, "idle_for", idle.Round(time.Millisecond), "closed_since_last_line", suppressed)
		}
	})
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting, lets connections finish the request they are
// answering, and closes them; when ctx ends first it closes them at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.slots.Close()
	s.closing = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		// A connection between requests ends now; one answering ends after it.
		c.net.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.net.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// ActiveConns is the number of open connections.
func (s *Server) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// conn is one Postfix connection: many requests, and the message the last
// ones were about.
type conn struct {
	s    *Server
	net  net.Conn
	peer string // for the log: the peer's uid, or its address
	in   *bufio.Reader
	idle *peers.Silence // its place among the connections waiting for a request
	once sync.Once
	// The message of the last decision (Postfix's instance attribute) and
	// what later requests of it get: its refusal again, or nothing more.
	instance string
	repeat   string
}

// close closes the connection and frees its slot, once, whoever comes first:
// the connection's own goroutine or takeSlot making room.
func (c *conn) close() {
	c.net.Close()
	c.once.Do(func() {
		s := c.s
		c.idle.Busy()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.slots.Release()
		s.wg.Done()
	})
}

func (s *Server) serveConn(c *conn) {
	defer c.close()
	nc := c.net
	for {
		// Under the lock Shutdown takes: its deadline for idle connections
		// must not be overwritten by the idle timeout.
		s.mu.Lock()
		closing := s.closing
		if !closing {
			nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		}
		s.mu.Unlock()
		if closing {
			return
		}
		c.idle.Waiting()
		attrs, err := c.readRequest()
		c.idle.Busy()
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed): // closed by the peer, or to make room
			return
		case err != nil:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				s.dropped("malformed")
				if ok, suppressed := s.throttle.Allow(c.peer, time.Now()); ok {
					s.opts.Log.Warn("malformed policy request; closing the connection", "peer", c.peer,
						"error", err, "malformed_since_last_line", suppressed)
				}
			}
			return
		}
		action := c.answer(attrs)
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(nc, "action=%s\n\n", action); err != nil {
			return
		}
	}
}

// readRequest waits for a request under the idle deadline, then gives it
// requestTimeout to arrive whole: a peer cannot hold a connection with
// half a request.
func (c *conn) readRequest() (request, error) {
	if _, err := c.in.Peek(1); err != nil {
		return nil, err
	}
	c.s.mu.Lock()
	if !c.s.closing { // Shutdown's deadline stands: the request may still arrive
		c.net.SetReadDeadline(time.Now().Add(requestTimeout))
	}
	c.s.mu.Unlock()
	return readRequest(c.in)
}

// errMalformed is a request that does not follow the protocol.
var errMalformed = errors.New("malformed request")

// request holds the attributes mxguard uses; Postfix sends some thirty.
type request map[string]string

// wanted are the attributes kept; the others are read and ignored, so that
// a request costs no more than these.
var wanted = map[string]bool{
	"request": true, "protocol_state": true, "instance": true, "queue_id": true,
	"client_address": true, "helo_name": true, "sender": true, "sasl_username": true,
}

// readRequest reads name=value lines up to an empty line. Unknown names are
// ignored; a line without "=", one longer than maxLine, more than
// maxAttributes lines or maxRequest octets is malformed.
func readRequest(in *bufio.Reader) (request, error) {
	attrs := make(request, len(wanted))
	size, lines := 0, 0
	for {
		line, err := in.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: a line longer than %d octets", errMalformed, maxLine)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && (len(line) > 0 || lines > 0) {
				return nil, fmt.Errorf("%w: cut off", errMalformed)
			}
			return nil, err
		}
		size += len(line)
		lines++
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if lines == 1 {
				return nil, fmt.Errorf("%w: an empty request", errMalformed)
			}
			return attrs, nil
		}
		if lines > maxAttributes || size > maxRequest {
			return nil, fmt.Errorf("%w: more than %d attributes or %d octets", errMalformed, maxAttributes, maxRequest)
		}
		name, value, ok := bytes.Cut(line, []byte("="))
		if !ok || len(name) == 0 {
			return nil, fmt.Errorf("%w: %q is not name=value", errMalformed, policy.Printable(string(line), 60))
		}
		if wanted[string(name)] { // no allocation: the compiler looks the bytes up
			attrs[string(name)] = string(value)
		}
	}
}

// answer decides one request. Only RCPT and DATA are decided (once per
// message); everything else is DUNNO: the verdict needs the sender, and
// only a recipient or DATA restriction can refuse the whole message.
func (c *conn) answer(attrs request) string {
	if attrs["request"] != "smtpd_access_policy" {
		return "DUNNO"
	}
	if st := attrs["protocol_state"]; st != "RCPT" && st != "DATA" {
		return "DUNNO"
	}
	instance := attrs["instance"]
	if instance != "" && instance == c.instance {
		return c.repeat
	}
	cfg := c.s.config()
	req := policy.Request{Sender: attrs["sender"], HELO: attrs["helo_name"], AuthUser: attrs["sasl_username"]}
	if ip, err := netip.ParseAddr(attrs["client_address"]); err == nil {
		req.ClientIP = ip.Unmap()
	}
	if req.Sender == "" {
		req.Sender = "<>"
	}
	action, repeat, r, outcome := c.decide(cfg, req)
	c.instance, c.repeat = instance, repeat
	c.s.log(attrs, r, outcome)
	if c.s.opts.Seen != nil {
		c.s.opts.Seen(r)
	}
	if c.s.opts.Recorder != nil {
		c.s.opts.Recorder.Decision(r, outcome)
	}
	return action
}

// decide evaluates req within the decision timeout and returns the action,
// what later requests of the same message get, the report and the outcome
// for the log ("temperror" when it failed open).
func (c *conn) decide(cfg *Config, req policy.Request) (action, repeat string, r *policy.Report, outcome string) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DecisionTimeout)
	defer cancel()
	r = evaluate(ctx, cfg.Engine, req)
	if r.Incomplete { // fail open; the lookups finish in the background for the cache
		return prepend(cfg, r.TempErrorHeaderValue()), "DUNNO", r, "temperror"
	}
	outcome = r.Verdict().String()
	switch r.Enforced() {
	case policy.Defer, policy.Reject:
		reply, _ := r.Reply()
		action = oneLine(reply.String())
		return action, action, r, outcome
	case policy.Hold:
		return "HOLD " + oneLine(r.HoldReason()), "DUNNO", r, outcome
	}
	return prepend(cfg, r.HeaderValue()), "DUNNO", r, outcome
}

// evaluate runs the engine, turning a panic into a failed-open report.
func evaluate(ctx context.Context, e Evaluator, req policy.Request) (r *policy.Report) {
	defer func() {
		if v := recover(); v != nil {
			r = &policy.Report{Domain: policy.ParseSender(req.Sender).Domain, ClientIP: req.ClientIP, Incomplete: true}
		}
	}()
	return e.Evaluate(ctx, req)
}

func prepend(cfg *Config, value string) string {
	return "PREPEND " + cfg.HeaderName + ": " + oneLine(value)
}

// oneLine keeps an action on its line: the protocol ends it at a newline.
func oneLine(s string) string { return lineBreaks.Replace(s) }

var lineBreaks = strings.NewReplacer("\r", " ", "\n", " ")

// log writes the decision's one line, as the milter does.
func (s *Server) log(attrs request, r *policy.Report, outcome string) {
	if !s.opts.Log.Enabled(context.Background(), slog.LevelInfo) { // log.level: warn or error
		return
	}
	queueID := attrs["queue_id"]
	if queueID == "" {
		queueID = "NOQUEUE"
	}
	const maxText = 120
	args := []any{
		"queue_id", policy.Printable(queueID, maxText),
		"verdict", outcome,
		"front", "policy",
		"domain", policy.Printable(r.Domain, maxText),
		"client", r.ClientIP.String(),
		"helo", policy.Printable(attrs["helo_name"], maxText),
		"elapsed_ms", r.Elapsed.Milliseconds(),
	}
	if findings := r.Findings(); findings != "" {
		args = append(args, "findings", findings)
	}
	if c, ok := r.Cause(); ok {
		args = append(args, "cause", policy.Printable(fmt.Sprintf("%s %s: %s", c.ID, c.Status, c.Detail), 2*maxText))
	}
	if r.ReportOnly {
		args = append(args, "mode", "report")
	}
	if attrs["sasl_username"] != "" {
		args = append(args, "authenticated", true) // the login itself stays out of the log
	}
	s.opts.Log.Info("decision", args...)
}
