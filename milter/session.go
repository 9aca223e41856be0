package milter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mxguard/mxguard/policy"
)

// Bounds on what a session keeps of the MTA's (ultimately a client's) text:
// go-milter accepts packets of up to 1 MB, and a copy must not pin one.
const (
	maxNameLen       = 512      // HELO, client and MTA names: longer is invalid anyway
	maxSenderLen     = 2048     // the end of a longer MAIL FROM, where its domain is
	maxFromHeaderLen = 64 << 10 // a From field parsed for addresses
	maxFromDomains   = 8        // From domains evaluated per message
	maxLogText       = 120      // remote text quoted in a log line
)

// session is the go-milter backend for one MTA connection. It never answers
// with go-milter's accept/reject/tempfail/discard responses: replies are
// reply codes instead, and "continue" at end of message (which the MTA takes
// as accept), so that the connection keeps its state across messages.
type session struct {
	m    *Milter
	conn *trackedConn

	// The connection, kept across messages.
	client netip.Addr
	// The MTA's own view of the client, for the log only: mxguard's checks
	// go by its own lookups, and an MTA's name may come from /etc/hosts.
	clientName    string
	clientResolve string // Sendmail's {client_resolve}: OK, FAIL, FORGED, TEMP
	helo          string
	daemon        string // {daemon_name}: which smtpd instance
	mta           string // j: the MTA's host name
	// canChangeHeaders says the MTA agreed to SMFIF_CHGHDRS, needed to
	// remove forged copies of mxguard's header.
	canChangeHeaders bool
	// leadingSpace says header values come, and go, with the space after
	// the colon (SMFIP_HDR_LEADSPC).
	leadingSpace bool

	msg *message // the current transaction, nil between transactions
}

// message is one transaction, from MAIL FROM to end of message or abort.
type message struct {
	cfg      *Config
	sender   string
	authUser string
	queueID  string
	started  time.Time
	// nonSMTP marks mail submitted locally (Postfix non_smtpd_milters: the
	// sendmail command, pickup): it cannot be refused per recipient.
	nonSMTP   bool
	envelope  *pending   // the envelope sender's evaluation
	fromAddrs []string   // addresses of the From header fields, with checks.header_from
	from      []*pending // their domains' evaluations, where they differ from the envelope's
	forged    int        // fields named like mxguard's header that came with the message
	replied   string     // the reply given at MAIL or RCPT, if any
	// content is the message streamed into the message checks, from its
	// first header field (checks.message).
	content *policy.Message
}

// discard stops the message's content stream, if it has one, unjudged.
func (msg *message) discard() {
	if msg != nil && msg.content != nil {
		msg.content.Discard()
		msg.content = nil
	}
}

// pending is an evaluation running beside the session. It runs in its own
// goroutine so that the session keeps reading: the MTA sends MAIL FROM (and
// RSET) without waiting, and an evaluation for an aborted transaction must
// not hold up the next one. Abandoned, it still fills the cache.
type pending struct {
	sender   string
	deadline time.Time
	done     chan struct{}
	report   *policy.Report
	panicked bool
}

func (s *session) start(cfg *Config, req policy.Request, deadline time.Time) *pending {
	p := &pending{sender: req.Sender, deadline: deadline, done: make(chan struct{})}
	// Most decisions are warm: decided here, in microseconds, they cost no
	// goroutine and no hand-off (docs/BENCHMARKS.md).
	if p.report = s.evaluateCached(cfg, req); p.report != nil {
		close(p.done)
		return p
	}
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
		p.report = cfg.Engine.EvaluateCold(ctx, req)
	}()
	return p
}

// evaluateCached is the engine's decision from its caches, or nil: none
// cached, or the engine panicked (EvaluateCold then meets it and fails open).
func (s *session) evaluateCached(cfg *Config, req policy.Request) (r *policy.Report) {
	defer func() {
		if recover() != nil {
			r = nil
		}
	}()
	return cfg.Engine.EvaluateCached(context.Background(), req)
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

// Negotiated learns what the MTA agreed to.
func (s *session) Negotiated(_ uint32, actions gomilter.OptAction, protocol gomilter.OptProtocol) {
	s.canChangeHeaders = actions&gomilter.OptChangeHeader != 0
	s.leadingSpace = protocol&gomilter.OptHeaderLeadingSpace != 0
}

// Connect is skipped when negotiated (OptNoConnect); kept for MTAs that send it anyway.
func (s *session) Connect(host string, family string, port uint16, addr net.IP, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "connect")
	if ip, ok := netip.AddrFromSlice(addr); ok && (family == "tcp4" || family == "tcp6") {
		s.client = ip.Unmap()
	}
	s.clientName = bounded(host, maxNameLen)
	s.takeMacros(m.Macros)
	return gomilter.RespContinue, nil
}

func (s *session) Helo(name string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "helo")
	s.helo = bounded(name, maxNameLen)
	s.takeMacros(m.Macros)
	return gomilter.RespContinue, nil
}

// bounded is a copy of s (not a slice of the packet it came in) of at most
// limit octets. A value cut short keeps enough to stay as invalid as it was.
func bounded(s string, limit int) string {
	return strings.Clone(s[:min(len(s), limit)])
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
		s.clientName = bounded(v, maxNameLen)
	}
	if v := macros["{client_resolve}"]; v != "" {
		s.clientResolve = bounded(v, 16)
	}
	if v := macros["{daemon_name}"]; v != "" {
		s.daemon = bounded(v, maxNameLen)
	}
	if v := macros["j"]; v != "" {
		s.mta = bounded(v, maxNameLen)
	}
	if v := macros["s"]; v != "" && s.helo == "" { // Sendmail's HELO macro
		s.helo = bounded(v, maxNameLen)
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
	defer s.recoverTo(&resp, "mail")
	s.takeMacros(m.Macros)
	cfg := s.m.config()
	now := time.Now()
	if len(from) > maxSenderLen {
		from = from[len(from)-maxSenderLen:]
	}
	msg := &message{
		cfg:      cfg,
		sender:   strings.Clone(from),
		authUser: bounded(m.Macros["{auth_authen}"], maxNameLen),
		queueID:  bounded(m.Macros["i"], maxNameLen),
		started:  now,
		// Postfix hands mail from sendmail(1) and pickup to non_smtpd_milters
		// as a connection from port 0 of localhost.
		nonSMTP: m.Macros["{client_port}"] == "0",
	}
	if from == "" {
		msg.sender = "<>" // go-milter strips the brackets of the null sender
	}
	s.msg.discard()
	s.msg = msg
	s.transaction(true)
	msg.envelope = s.start(cfg, s.request(msg.sender, msg), now.Add(cfg.DecisionTimeout))
	if s.m.opts.ReplyAt == StageMail {
		return s.envelopeReply(), nil
	}
	return gomilter.RespContinue, nil
}

func (s *session) request(sender string, msg *message) policy.Request {
	r := policy.Request{Sender: sender, ClientIP: s.client, HELO: s.helo, AuthUser: msg.authUser}
	if !s.m.opts.Message {
		r.MessageSkip = "checks.message: false"
	}
	return r
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "rcpt")
	if s.msg == nil {
		return gomilter.RespContinue, nil
	}
	return s.envelopeReply(), nil
}

// envelopeReply waits for the envelope decision and answers a defer or
// reject with its reply code; anything else continues. Mail that did not
// come over SMTP is decided at end of message.
func (s *session) envelopeReply() gomilter.Response {
	msg := s.msg
	if msg.nonSMTP {
		return gomilter.RespContinue
	}
	if msg.replied != "" {
		return replyCode(msg.replied)
	}
	r, ok := msg.envelope.wait()
	if !ok {
		return gomilter.RespContinue // fail open; the header says temperror
	}
	reply, ok := r.Reply()
	if !ok || r.Enforced() < policy.Defer { // policy.mode: report refuses nothing
		return gomilter.RespContinue
	}
	msg.replied = reply.String()
	s.transaction(false) // no message follows a refused sender
	if seen := s.m.opts.Seen; seen != nil {
		seen(r)
	}
	s.logDecision(msg, r, r.Verdict().String(), "envelope", "")
	return replyCode(msg.replied)
}

// replyCode is a custom SMTP reply; '%' is special to the MTA.
func replyCode(reply string) gomilter.Response {
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), strings.ReplaceAll(reply, "%", "%%"))
}

// Header counts forged copies of mxguard's header and, with
// checks.header_from, collects the From addresses. The MTA does not wait
// for an answer (SMFIP_NR_HDR).
func (s *session) Header(name, value string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "header")
	msg := s.msg
	if msg == nil {
		return gomilter.RespContinue, nil
	}
	if s.m.opts.Message {
		s.stream(msg, name, value)
	}
	switch {
	case strings.EqualFold(name, msg.cfg.HeaderName):
		msg.forged++
	case s.m.opts.HeaderFrom && strings.EqualFold(name, "From") && len(msg.fromAddrs) < maxFromDomains:
		msg.fromAddrs = append(msg.fromAddrs, headerFromAddresses(value)...)
	}
	return gomilter.RespContinue, nil
}

// stream writes a header field to the message checks as it stands in the
// message. A forged copy of mxguard's header is left out: it is removed
// before the message leaves.
func (s *session) stream(msg *message, name, value string) {
	if strings.EqualFold(name, msg.cfg.HeaderName) {
		return
	}
	sep := ": "
	if s.leadingSpace {
		sep = ":"
	}
	io.WriteString(s.content(msg), name+sep+value+"\r\n")
}

// content is the message's stream into the message checks, started with
// its first header field, or at the end of a header section that has none.
func (s *session) content(msg *message) *policy.Message {
	if msg.content == nil {
		msg.content = msg.cfg.Engine.NewMessage()
		s.conn.content.Store(msg.content) // for a connection that ends without an abort
	}
	return msg.content
}

// headerFromAddresses extracts the addresses of a From header field, or none
// when it does not parse: a garbled header is not worth refusing mail over.
// The MTA passes folded fields with their line breaks; unfold first (RFC
// 5322 section 2.2.3), or a sender could fold the header to get past the check.
var unfold = strings.NewReplacer("\r\n", "", "\n", "", "\r", "")

func headerFromAddresses(value string) []string {
	value = unfold.Replace(value[:min(len(value), maxFromHeaderLen)])
	list, err := policy.ParseAddressList(value)
	if err != nil {
		return nil
	}
	addrs := make([]string, 0, len(list))
	for _, a := range list {
		addrs = append(addrs, strings.Clone(a.Address))
	}
	return addrs
}

// Headers is the end of the header: with checks.header_from, the From
// domains that differ from the envelope sender's are evaluated, unless the
// envelope sender is null (a bounce: no domain checks at all).
func (s *session) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "eoh")
	msg := s.msg
	if msg != nil && s.m.opts.Message {
		s.content(msg).Write([]byte("\r\n"))
	}
	if msg == nil || len(msg.fromAddrs) == 0 || policy.ParseSender(msg.sender).Null {
		return gomilter.RespContinue, nil
	}
	seen := map[string]bool{policy.ParseSender(msg.sender).Domain: true}
	deadline := time.Now().Add(msg.cfg.DecisionTimeout)
	for _, addr := range msg.fromAddrs {
		d := policy.ParseSender(addr).Domain
		if seen[d] || len(msg.from) == maxFromDomains {
			continue
		}
		seen[d] = true
		msg.from = append(msg.from, s.start(msg.cfg, s.request(addr, msg), deadline))
	}
	return gomilter.RespContinue, nil
}

// BodyChunk streams the body into the message checks; without them it is
// skipped (OptNoBody). The MTA does not wait for an answer (SMFIP_NR_BODY).
func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "body")
	if msg := s.msg; msg != nil && msg.content != nil {
		msg.content.Write(chunk)
	}
	return gomilter.RespContinue, nil
}

// Body is the end of the message: remove forged copies of mxguard's header,
// add the real one, quarantine on hold, or refuse the message when a From
// domain's verdict (or, for mail not received over SMTP, any verdict) says so.
func (s *session) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.recoverTo(&resp, "eom")
	msg := s.msg
	if msg == nil {
		return gomilter.RespContinue, nil
	}
	s.msg = nil
	s.transaction(false)
	defer msg.discard() // what the message checks have not taken
	if id := m.Macros["i"]; id != "" {
		msg.queueID = bounded(id, maxNameLen)
	}
	if err := s.removeForged(m, msg); err != nil {
		return nil, err
	}
	envelope, ok := msg.envelope.wait()
	if !ok {
		return s.failOpen(m, msg, envelope, "envelope", msg.sender)
	}
	final, subject := envelope, "envelope"
	// The inventory keeps the domain's own findings: one message's
	// signature is not the domain's state.
	inventoried := envelope
	if msg.content != nil {
		envelope = s.judgeMessage(msg, envelope)
		if envelope.Incomplete { // decision_timeout at the end of the message: fail open
			return s.failOpen(m, msg, envelope, "message", msg.sender)
		}
		if envelope.Verdict() > final.Verdict() {
			subject = "message"
		}
		final = envelope
	}
	from := make([]*policy.Report, len(msg.from))
	for i, p := range msg.from {
		r, ok := p.wait()
		if !ok {
			return s.failOpen(m, msg, r, "header-from", p.sender)
		}
		from[i] = r
		if r.Verdict() > final.Verdict() {
			final, subject = r, "header-from"
		}
	}
	if seen := s.m.opts.Seen; seen != nil {
		seen(inventoried)
		for _, r := range from {
			seen(r)
		}
	}
	verdict := final.Verdict()
	applied := final.Enforced()
	if msg.nonSMTP && applied >= policy.Defer {
		applied = msg.cfg.NonSMTPAction
		if applied == policy.Pass { // unset: the documented default
			applied = policy.Hold
		}
		if final.Decision.ByTempError {
			applied = min(applied, policy.Hold) // never bounce on a temporary error
		}
	}
	note := ""
	if applied != verdict && !final.ReportOnly {
		note = applied.String() + " (not received over SMTP; milter.non_smtp_action)"
	}
	s.logDecision(msg, final, verdict.String(), subject, note)
	if applied >= policy.Defer { // only a From domain, or mail not received over SMTP, is refused here
		reply, _ := final.ReplyAs(applied)
		return replyCode(reply.String()), nil
	}
	word := applied.String() // what was done; under policy.mode: report, what would have been
	if final.ReportOnly {
		word = verdict.String()
	}
	if err := m.AddHeader(msg.cfg.HeaderName, s.headerValue(policy.Header(word, envelope, from...))); err != nil {
		return nil, err
	}
	if applied == policy.Hold {
		if err := m.Quarantine(final.HoldReason()); err != nil {
			return nil, err
		}
	}
	return gomilter.RespContinue, nil
}

// judgeMessage runs the message checks on the envelope's report, within
// decision_timeout of the end of the message.
func (s *session) judgeMessage(msg *message, envelope *policy.Report) *policy.Report {
	ctx, cancel := context.WithTimeout(context.Background(), msg.cfg.DecisionTimeout)
	defer cancel()
	content := msg.content
	msg.content = nil
	s.conn.content.CompareAndSwap(content, nil)
	return msg.cfg.Engine.EvaluateMessage(ctx, envelope, s.request(msg.sender, msg), content)
}

// headerValue is a value for a field mxguard adds: with SMFIP_HDR_LEADSPC
// the MTA adds no space after the colon itself.
func (s *session) headerValue(v string) string {
	if s.leadingSpace {
		return " " + v
	}
	return v
}

// removeForged deletes every field named like mxguard's header that came
// with the message, last first so that the indexes of the others hold, so
// that downstream filters can trust the header.
func (s *session) removeForged(m *gomilter.Modifier, msg *message) error {
	if msg.forged == 0 {
		return nil
	}
	if !s.canChangeHeaders {
		s.m.log.Warn("the MTA does not allow header changes (SMFIF_CHGHDRS): a forged header stays",
			"queue_id", msg.queueID, "header", msg.cfg.HeaderName, "count", msg.forged)
		return nil
	}
	for i := msg.forged; i >= 1; i-- {
		if err := m.ChangeHeader(i, msg.cfg.HeaderName, ""); err != nil {
			return err
		}
	}
	return nil
}

// failOpen accepts the message with a temperror header: mxguard never
// refuses mail because of its own trouble.
func (s *session) failOpen(m *gomilter.Modifier, msg *message, r *policy.Report, subject, sender string) (gomilter.Response, error) {
	if r == nil {
		r = &policy.Report{Domain: policy.ParseSender(sender).Domain, ClientIP: s.client, Elapsed: time.Since(msg.started), Incomplete: true}
	}
	if seen := s.m.opts.Seen; seen != nil {
		seen(r)
	}
	s.logDecision(msg, r, "temperror", subject, "")
	if err := m.AddHeader(msg.cfg.HeaderName, s.headerValue(r.TempErrorHeaderValue())); err != nil {
		return nil, err
	}
	return gomilter.RespContinue, nil
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.msg.discard()
	s.msg = nil // Postfix aborts twice per message (after EOM and at QUIT): stay idempotent
	s.transaction(false)
	return nil
}

// transaction tells the connection whether a transaction is open: then its
// end, not the MTA's silence during DATA, bounds the wait for a command.
func (s *session) transaction(open bool) {
	s.conn.inTransaction, s.conn.transactionBy = open, time.Time{}
	if t := s.m.opts.TransactionTimeout; open && t > 0 {
		s.conn.transactionBy = time.Now().Add(t)
	}
}

// recoverTo turns a panic in a callback into "continue" (go-milter drops it
// where the MTA expects no answer): the session goes on and the message is
// accepted.
func (s *session) recoverTo(resp *gomilter.Response, stage string) {
	if v := recover(); v != nil {
		s.m.log.Error("milter callback panicked; failing open", "stage", stage, "panic", v, "stack", string(debug.Stack()))
		*resp = gomilter.RespContinue
	}
}

// logDecision writes the one log line of a decision and counts it. Text
// that came from the client is quoted shortened.
func (s *session) logDecision(msg *message, r *policy.Report, outcome, subject, applied string) {
	s.m.rec.Decision(r, outcome)
	if !s.m.log.Enabled(context.Background(), slog.LevelInfo) { // log.level: warn or error
		return
	}
	queueID := msg.queueID
	if queueID == "" {
		queueID = "NOQUEUE"
	}
	attrs := []any{
		"queue_id", policy.Printable(queueID, maxLogText),
		"verdict", outcome,
		"subject", subject,
		"domain", policy.Printable(r.Domain, maxLogText),
		"client", s.client.String(),
		"helo", policy.Printable(s.helo, maxLogText),
		"elapsed_ms", r.Elapsed.Milliseconds(),
	}
	if applied != "" {
		attrs = append(attrs, "applied", applied)
	}
	if r.ReportOnly {
		attrs = append(attrs, "mode", "report")
	}
	if findings := r.Findings(); findings != "" {
		attrs = append(attrs, "findings", findings)
	}
	if c, ok := r.Cause(); ok {
		attrs = append(attrs, "cause", policy.Printable(fmt.Sprintf("%s %s: %s", c.ID, c.Status, c.Detail), 2*maxLogText))
	}
	if msg.authUser != "" {
		attrs = append(attrs, "authenticated", true) // the login itself stays out of the log
	}
	if s.clientName != "" {
		attrs = append(attrs, "client_name", policy.Printable(s.clientName, maxLogText))
	}
	if s.clientResolve != "" {
		attrs = append(attrs, "client_resolve", policy.Printable(s.clientResolve, maxLogText))
	}
	if s.daemon != "" {
		attrs = append(attrs, "daemon", policy.Printable(s.daemon, maxLogText))
	}
	if s.mta != "" {
		attrs = append(attrs, "mta", policy.Printable(s.mta, maxLogText))
	}
	s.m.log.Info("decision", attrs...)
}
