package milter

import (
	"context"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/policy"
)

// session is the go-milter backend for one MTA connection. It never answers
// with go-milter's accept/reject/tempfail/discard responses: those make
// go-milter replace the backend, which would lose the HELO name and client
// for the next message on the connection. Replies are reply codes instead,
// and "continue" at end of message (which the MTA takes as accept).
type session struct {
	m    *Milter
	conn *trackedConn // nil if go-milter ever made a session on its own

	// The connection, kept across messages.
	client     netip.Addr
	clientName string // the MTA's verified client name, "unknown" if none
	helo       string
	daemon     string // {daemon_name}: which smtpd instance
	mta        string // j: the MTA's host name

	msg *message // the current transaction, nil between transactions
}

// message is one transaction, from MAIL FROM to end of message or abort.
type message struct {
	cfg        *Config
	sender     string
	authUser   string
	queueID    string
	started    time.Time
	envelope   *pending // the envelope sender's evaluation
	fromHeader string   // the RFC5322.From address, with checks.header_from
	header     *pending // its domain's, when it differs
	replied    string   // the reply given at MAIL or RCPT, if any
}

// pending is an evaluation running beside the session. It runs in its own
// goroutine so that the session keeps reading: the MTA sends MAIL FROM (and
// RSET) without waiting, and an evaluation for an aborted transaction must
// not hold up the next one. Abandoned, it still fills the cache.
type pending struct {
	deadline time.Time
	done     chan struct{}
	report   *policy.Report
	panicked bool
}

func (s *session) start(cfg *Config, req policy.Request, deadline time.Time) *pending {
	p := &pending{deadline: deadline, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer func() {
			if v := recover(); v != nil {
				s.m.log.Error("evaluation panicked; failing open", "panic", v, "stack", string(debug.Stack()))
				p.panicked = true
			}
		}()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		p.report = cfg.Engine.Evaluate(ctx, req)
	}()
	return p
}

// wait returns the report and whether it is complete enough to act on; not
// ok (a panic, or the deadline first) means fail open. The report may then
// be partial, or nil.
func (p *pending) wait() (*policy.Report, bool) {
	t := time.NewTimer(time.Until(p.deadline) + 50*time.Millisecond) // a backstop: Evaluate stops at the deadline itself
	defer t.Stop()
	select {
	case <-p.done:
		return p.report, !p.panicked && !p.report.Incomplete
	case <-t.C:
		return nil, false
	}
}

// ok answers "continue", or nothing when the MTA was told not to wait for an
// answer at this stage (an answer then would be read as the next one's).
func (s *session) ok(noReply gomilter.OptProtocol) gomilter.Response {
	if s.m.proto&noReply != 0 {
		return nil
	}
	return gomilter.RespContinue
}

// Connect is skipped when negotiated (OptNoConnect); kept for MTAs that send it anyway.
func (s *session) Connect(host string, family string, port uint16, addr net.IP, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "connect", gomilter.OptNoConnReply)
	if ip, ok := netip.AddrFromSlice(addr); ok && (family == "tcp4" || family == "tcp6") {
		s.client = ip.Unmap()
	}
	s.clientName = host
	s.takeMacros(m.Macros)
	return s.ok(gomilter.OptNoConnReply), nil
}

func (s *session) Helo(name string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "helo", gomilter.OptNoHeloReply)
	s.helo = name
	s.takeMacros(m.Macros)
	return s.ok(gomilter.OptNoHeloReply), nil
}

// takeMacros copies the connection macros: go-milter replaces its macro map
// with every macro packet, and Postfix resends these with MAIL FROM.
func (s *session) takeMacros(macros map[string]string) {
	if v := macros["{client_addr}"]; v != "" {
		if ip, err := netip.ParseAddr(trimIPv6Tag(v)); err == nil {
			s.client = ip.Unmap()
		}
	}
	if v := macros["{client_name}"]; v != "" {
		s.clientName = v
		// Sendmail's {client_name} is the PTR name, confirmed only when
		// {client_resolve} says OK; Postfix's is confirmed or "unknown".
		if r, ok := macros["{client_resolve}"]; ok && r != "OK" {
			s.clientName = "unknown"
		}
	}
	if v := macros["{daemon_name}"]; v != "" {
		s.daemon = v
	}
	if v := macros["j"]; v != "" {
		s.mta = v
	}
	if v := macros["s"]; v != "" && s.helo == "" { // Sendmail's HELO macro
		s.helo = v
	}
}

// trimIPv6Tag removes Sendmail's "IPv6:" prefix from an address macro.
func trimIPv6Tag(s string) string {
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		return s[5:]
	}
	return s
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "mail", gomilter.OptNoMailReply)
	s.takeMacros(m.Macros)
	cfg := s.m.config()
	now := time.Now()
	msg := &message{
		cfg:      cfg,
		sender:   from,
		authUser: m.Macros["{auth_authen}"],
		queueID:  m.Macros["i"],
		started:  now,
	}
	if from == "" {
		msg.sender = "<>" // go-milter strips the brackets of the null sender
	}
	s.msg = msg
	s.transaction(true)
	msg.envelope = s.start(cfg, s.request(msg.sender, msg), now.Add(cfg.DecisionTimeout))
	if s.m.opts.ReplyAt == StageMail {
		return s.envelopeReply(), nil
	}
	return s.ok(gomilter.OptNoMailReply), nil
}

func (s *session) request(sender string, msg *message) policy.Request {
	return policy.Request{Sender: sender, ClientIP: s.client, HELO: s.helo, ClientName: s.clientName, AuthUser: msg.authUser}
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "rcpt", gomilter.OptNoRcptReply)
	if s.msg == nil {
		return gomilter.RespContinue, nil
	}
	return s.envelopeReply(), nil
}

// envelopeReply waits for the envelope decision and answers a defer or
// reject with its reply code; anything else continues.
func (s *session) envelopeReply() gomilter.Response {
	msg := s.msg
	if msg.replied != "" {
		return replyCode(msg.replied)
	}
	r, ok := msg.envelope.wait()
	if !ok {
		return gomilter.RespContinue // fail open; the header says temperror
	}
	reply, ok := r.Reply()
	if !ok {
		return gomilter.RespContinue
	}
	msg.replied = reply.String()
	s.transaction(false) // no message follows a refused sender
	s.logDecision(msg, r, r.Verdict().String(), "envelope")
	return replyCode(msg.replied)
}

// replyCode is a custom SMTP reply; '%' is special to the MTA.
func replyCode(reply string) gomilter.Response {
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), strings.ReplaceAll(reply, "%", "%%"))
}

func (s *session) Header(name, value string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "header", gomilter.OptNoHeaderReply)
	if s.msg != nil && s.m.opts.HeaderFrom && s.msg.fromHeader == "" && strings.EqualFold(name, "From") {
		s.msg.fromHeader = headerFromAddress(value)
	}
	return s.ok(gomilter.OptNoHeaderReply), nil
}

// headerFromAddress extracts the first address of a From header field, or
// "" when it does not parse: a garbled header is not worth refusing mail over.
// The MTA passes folded fields with their line breaks; unfold first (RFC
// 5322 §2.2.3), or a sender could fold the header to get past the check.
func headerFromAddress(value string) string {
	value = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(value)
	if list, err := mail.ParseAddressList(value); err == nil && len(list) > 0 {
		return list[0].Address
	}
	return ""
}

func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "eoh", gomilter.OptNoEOHReply)
	msg := s.msg
	if msg == nil || msg.fromHeader == "" {
		return s.ok(gomilter.OptNoEOHReply), nil
	}
	if policy.ParseSender(msg.fromHeader).Domain != policy.ParseSender(msg.sender).Domain {
		msg.header = s.start(msg.cfg, s.request(msg.fromHeader, msg), time.Now().Add(msg.cfg.DecisionTimeout))
	}
	return s.ok(gomilter.OptNoEOHReply), nil
}

// BodyChunk is skipped (OptNoBody); kept for MTAs that send it anyway.
func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.ok(gomilter.OptNoBodyReply), nil
}

// Body is the end of the message: add the header, quarantine on hold, or
// refuse the message when the From domain's verdict says so.
func (s *session) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "eom", 0)
	msg := s.msg
	if msg == nil {
		return gomilter.RespContinue, nil
	}
	s.msg = nil
	s.transaction(false)
	if id := m.Macros["i"]; id != "" {
		msg.queueID = id
	}
	name := msg.cfg.HeaderName
	final, ok := msg.envelope.wait()
	if !ok {
		s.failOpen(m, msg, final, "envelope", msg.sender)
		return gomilter.RespContinue, nil
	}
	subject := "envelope"
	if msg.header != nil {
		hdr, ok := msg.header.wait()
		if !ok {
			s.failOpen(m, msg, hdr, "header-from", msg.fromHeader)
			return gomilter.RespContinue, nil
		}
		if hdr.Verdict() > final.Verdict() {
			final, subject = hdr, "header-from"
		}
	}
	verdict := final.Verdict()
	s.logDecision(msg, final, verdict.String(), subject)
	if reply, ok := final.Reply(); ok { // only a From domain can still defer or reject here
		return replyCode(reply.String()), nil
	}
	if err := m.AddHeader(name, final.HeaderValue()); err != nil {
		return nil, err
	}
	if verdict == policy.Hold {
		if err := m.Quarantine(holdReason(final)); err != nil {
			return nil, err
		}
	}
	return gomilter.RespContinue, nil
}

// failOpen accepts the message with a temperror header: mxguard never
// refuses mail because of its own trouble.
func (s *session) failOpen(m *gomilter.Modifier, msg *message, r *policy.Report, subject, sender string) {
	if r == nil {
		r = &policy.Report{Domain: policy.ParseSender(sender).Domain, ClientIP: s.client, Elapsed: time.Since(msg.started)}
	}
	s.logDecision(msg, r, "temperror", subject)
	if err := m.AddHeader(msg.cfg.HeaderName, r.TempErrorHeaderValue()); err != nil {
		s.m.log.Warn("adding the header failed", "error", err)
	}
}

func holdReason(r *policy.Report) string {
	c, _ := r.Cause()
	return fmt.Sprintf("mxguard: %s: %s %s: %s", r.Domain, c.ID, c.Status, c.Detail)
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.msg = nil // Postfix aborts twice per message (after EOM and at QUIT): stay idempotent
	s.transaction(false)
	return nil
}

// transaction tells the connection whether a transaction is open, when the
// idle timeout must not count the MTA's silence during DATA.
func (s *session) transaction(open bool) {
	if s.conn != nil {
		s.conn.busy.Store(open)
	}
}

// recoverTo turns a panic in a callback into "continue" (or no answer where
// none is expected): the session goes on and the message is accepted.
func (s *session) recoverTo(resp *gomilter.Response, stage string, noReply gomilter.OptProtocol) {
	if v := recover(); v != nil {
		s.m.log.Error("milter callback panicked; failing open", "stage", stage, "panic", v, "stack", string(debug.Stack()))
		*resp = s.ok(noReply)
	}
}

// logDecision writes the one log line of a decision and counts it.
func (s *session) logDecision(msg *message, r *policy.Report, outcome, subject string) {
	s.m.rec.Decision(r, outcome)
	queueID := msg.queueID
	if queueID == "" {
		queueID = "NOQUEUE"
	}
	attrs := []any{
		"queue_id", queueID,
		"verdict", outcome,
		"subject", subject,
		"domain", r.Domain,
		"client", s.client.String(),
		"helo", s.helo,
		"elapsed_ms", r.Elapsed.Milliseconds(),
	}
	if findings := findings(r); findings != "" {
		attrs = append(attrs, "findings", findings)
	}
	if c, ok := r.Cause(); ok {
		attrs = append(attrs, "cause", fmt.Sprintf("%s %s: %s", c.ID, c.Status, c.Detail))
	}
	if msg.authUser != "" {
		attrs = append(attrs, "authenticated", true) // the login itself stays out of the log
	}
	if s.daemon != "" {
		attrs = append(attrs, "daemon", s.daemon)
	}
	if s.mta != "" {
		attrs = append(attrs, "mta", s.mta)
	}
	s.m.log.Info("decision", attrs...)
}

func findings(r *policy.Report) string {
	var parts []string
	for _, c := range r.Checks {
		if c.Status == policy.StatusWarn || c.Status == policy.StatusFail || c.Status == policy.StatusTempError {
			parts = append(parts, fmt.Sprintf("%s=%s", c.ID, c.Status))
		}
	}
	return strings.Join(parts, " ")
}
