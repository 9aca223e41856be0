package smtptest

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-milter"
)

// MilterConn describes one SMTP connection the way an MTA shows it to a
// milter: the client, its HELO name, macros, and the messages sent on it.
type MilterConn struct {
	ClientIP   string // "" for a connection of unknown family (local submission)
	ClientName string // the MTA's verified client host name; "unknown" if none
	HELO       string
	// Macros are sent before every command, as Postfix does with its
	// milter_*_macros settings (e.g. "j", "{daemon_name}"). {client_addr} and
	// {client_name} are added from ClientIP and ClientName.
	Macros   map[string]string
	Messages []MilterMessage
}

// MilterMessage is one transaction on a MilterConn.
type MilterMessage struct {
	From     string // without angle brackets; "" is the null sender
	To       []string
	Headers  [][2]string // name, value; in order
	Body     string
	QueueID  string // the "i" macro, sent from MAIL FROM on
	AuthUser string // {auth_authen}
	// AbortAfterMail and AbortAfterRcpt end the transaction with RSET after
	// MAIL FROM or after the recipients.
	AbortAfterMail, AbortAfterRcpt bool
	// DataDelay pauses after the recipients, as an MTA does while a slow
	// client uploads the message: the milter hears nothing meanwhile.
	DataDelay time.Duration
}

// MilterResult is what the milter did with one message.
type MilterResult struct {
	// Stage is where the milter's answer ended the transaction ("mail",
	// "rcpt", "eoh", "eom"), or "aborted".
	Stage string
	// Action is the milter's final answer: milter.ActContinue or
	// ActAccept (accepted), ActReplyCode, ActTempFail, ActReject, ActDiscard.
	Action milter.ActionCode
	// Reply is the SMTP reply of an ActReplyCode answer, e.g. "451 4.7.1 ...".
	Reply string
	// Headers lists the headers the milter added: name, value.
	Headers [][2]string
	// HeaderChanges lists the milter's changes to headers that came with
	// the message, in order; an empty Value deletes the field.
	HeaderChanges []HeaderChange
	// Quarantine is the hold reason, if the milter quarantined the message.
	Quarantine string
}

// HeaderChange is one SMFIR_CHGHEADER: the Index-th field (from 1) called
// Name, compared without case, gets Value.
type HeaderChange struct {
	Index       int
	Name, Value string
}

// Accepted reports whether the MTA would accept the message.
func (r MilterResult) Accepted() bool {
	return r.Stage == "eom" && (r.Action == milter.ActContinue || r.Action == milter.ActAccept)
}

// Header returns the value of the first added header called name.
func (r MilterResult) Header(name string) (string, bool) {
	for _, h := range r.Headers {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}

// The option masks Postfix 3.7 offers a milter (protocol version 6).
const (
	postfixActions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt | milter.OptRemoveRcpt |
		milter.OptChangeHeader | milter.OptQuarantine | milter.OptChangeFrom | milter.OptAddRcptWithArgs | milter.OptSetSymList
	postfixProtocol = milter.OptNoConnect | milter.OptNoHelo | milter.OptNoMailFrom | milter.OptNoRcptTo |
		milter.OptNoBody | milter.OptNoHeaders | milter.OptNoEOH | milter.OptNoUnknown | milter.OptNoData |
		milter.OptSkip | milter.OptRcptRej | milter.OptNoHeaderReply | milter.OptNoConnReply | milter.OptNoHeloReply |
		milter.OptNoMailReply | milter.OptNoRcptReply | milter.OptNoDataReply | milter.OptNoUnknownReply |
		milter.OptNoEOHReply | milter.OptNoBodyReply | milter.OptHeaderLeadingSpace
)

// PlayMilter connects to the milter at network/address ("tcp",
// "127.0.0.1:8891" or "unix", "/path"), plays conn, and returns one result
// per message. It speaks milter protocol 6 with go-milter's client, in the
// order Postfix uses: connect, HELO, then per message MAIL, RCPT..., headers,
// end of headers, body, end of message, abort; QUIT at the end. Strings are
// C strings on the wire: like an MTA's, they end at their first NUL.
func PlayMilter(network, address string, conn MilterConn) ([]MilterResult, error) {
	conn = conn.cStrings()
	client := milter.NewClientWithOptions(network, address, milter.ClientOptions{
		Dialer:       &net.Dialer{Timeout: 10 * time.Second},
		ReadTimeout:  time.Minute,
		WriteTimeout: 10 * time.Second,
		// What Postfix 3.7 offers: every action, and every step a milter may
		// skip or take without answering.
		ActionMask:   postfixActions,
		ProtocolMask: postfixProtocol,
	})
	s, err := client.Session()
	if err != nil {
		return nil, err
	}
	defer s.Close()

	macros := func(code milter.Code, extra ...string) error {
		kv := []string{}
		for k, v := range conn.Macros {
			kv = append(kv, k, v)
		}
		if conn.ClientIP != "" {
			kv = append(kv, "{client_addr}", conn.ClientIP)
		}
		if conn.ClientName != "" {
			kv = append(kv, "{client_name}", conn.ClientName)
		}
		return s.Macros(code, append(kv, extra...)...)
	}
	family, port := milter.FamilyUnknown, uint16(0)
	if conn.ClientIP != "" {
		ip, err := netip.ParseAddr(conn.ClientIP)
		if err != nil {
			return nil, fmt.Errorf("smtptest: client IP: %w", err)
		}
		family, port = milter.FamilyInet, 40000
		if ip.Is6() {
			family = milter.FamilyInet6
		}
	}
	if err := macros(milter.CodeConn); err != nil {
		return nil, err
	}
	if act, err := s.Conn(conn.ClientName, family, port, conn.ClientIP); err != nil || act.Code != milter.ActContinue {
		return nil, connectionEnded("connect", act, err)
	}
	if conn.HELO != "" {
		if err := macros(milter.CodeHelo); err != nil {
			return nil, err
		}
		if act, err := s.Helo(conn.HELO); err != nil || act.Code != milter.ActContinue {
			return nil, connectionEnded("helo", act, err)
		}
	}
	var results []MilterResult
	for _, msg := range conn.Messages {
		r, err := playMessage(s, msg, macros)
		if err != nil {
			return results, err
		}
		results = append(results, r)
		if err := s.Abort(); err != nil { // Postfix resets the milter after every message
			return results, err
		}
	}
	return results, nil
}

// cStrings returns conn with every string cut at its first NUL: an MTA
// cannot send more, and a NUL inside a field would misframe the packet.
func (conn MilterConn) cStrings() MilterConn {
	c := func(s string) string {
		if i := strings.IndexByte(s, 0); i >= 0 {
			return s[:i]
		}
		return s
	}
	conn.ClientIP, conn.ClientName, conn.HELO = c(conn.ClientIP), c(conn.ClientName), c(conn.HELO)
	macros := make(map[string]string, len(conn.Macros))
	for k, v := range conn.Macros {
		macros[c(k)] = c(v)
	}
	conn.Macros = macros
	msgs := make([]MilterMessage, len(conn.Messages))
	for i, m := range conn.Messages {
		m.From, m.QueueID, m.AuthUser = c(m.From), c(m.QueueID), c(m.AuthUser)
		to := make([]string, len(m.To))
		for j, r := range m.To {
			to[j] = c(r)
		}
		hs := make([][2]string, len(m.Headers))
		for j, h := range m.Headers {
			hs[j] = [2]string{c(h[0]), c(h[1])}
		}
		m.To, m.Headers = to, hs
		msgs[i] = m
	}
	conn.Messages = msgs
	return conn
}

func connectionEnded(stage string, act *milter.Action, err error) error {
	if err != nil {
		return fmt.Errorf("smtptest: %s: %w", stage, err)
	}
	return fmt.Errorf("smtptest: the milter ended the connection at %s with %q", stage, act.Code)
}

func playMessage(s *milter.ClientSession, msg MilterMessage, macros func(milter.Code, ...string) error) (MilterResult, error) {
	var extra []string
	if msg.QueueID != "" {
		extra = append(extra, "i", msg.QueueID)
	}
	if msg.AuthUser != "" {
		extra = append(extra, "{auth_authen}", msg.AuthUser)
	}
	ended := func(stage string, act *milter.Action) MilterResult {
		return MilterResult{Stage: stage, Action: act.Code, Reply: reply(act)}
	}
	if err := macros(milter.CodeMail, extra...); err != nil {
		return MilterResult{}, err
	}
	act, err := s.Mail(msg.From, nil)
	if err != nil {
		return MilterResult{}, err
	}
	if act.Code != milter.ActContinue {
		return ended("mail", act), nil
	}
	if msg.AbortAfterMail {
		return MilterResult{Stage: "aborted", Action: milter.ActContinue}, nil
	}
	for _, rcpt := range msg.To {
		if err := macros(milter.CodeRcpt, extra...); err != nil {
			return MilterResult{}, err
		}
		if act, err = s.Rcpt(rcpt, nil); err != nil {
			return MilterResult{}, err
		}
		if act.Code != milter.ActContinue {
			return ended("rcpt", act), nil
		}
	}
	if msg.AbortAfterRcpt {
		return MilterResult{Stage: "aborted", Action: milter.ActContinue}, nil
	}
	time.Sleep(msg.DataDelay)
	// With SMFIP_HDR_LEADSPC an MTA sends each value as it stands after
	// the colon, and takes the milter's values so.
	leadingSpace := s.ProtocolOption(milter.OptHeaderLeadingSpace)
	for _, h := range msg.Headers {
		if err := macros(milter.CodeHeader, extra...); err != nil {
			return MilterResult{}, err
		}
		value := h[1]
		if leadingSpace && !strings.HasPrefix(value, " ") && !strings.HasPrefix(value, "\t") {
			value = " " + value
		}
		if act, err = s.HeaderField(h[0], value); err != nil {
			return MilterResult{}, err
		}
		if act.Code != milter.ActContinue {
			return ended("header", act), nil
		}
	}
	if err := macros(milter.CodeEOH, extra...); err != nil {
		return MilterResult{}, err
	}
	if act, err = s.HeaderEnd(); err != nil {
		return MilterResult{}, err
	}
	if act.Code != milter.ActContinue {
		return ended("eoh", act), nil
	}
	// Postfix sends the body in chunks of at most 64 KiB (less one octet).
	for body := msg.Body; body != "" && !s.ProtocolOption(milter.OptNoBody); {
		n := min(len(body), 65535)
		if act, err = s.BodyChunk([]byte(body[:n])); err != nil {
			return MilterResult{}, err
		}
		if act.Code == milter.ActSkip {
			break
		}
		if act.Code != milter.ActContinue {
			return ended("body", act), nil
		}
		body = body[n:]
	}
	if err := macros(milter.CodeEOB, extra...); err != nil {
		return MilterResult{}, err
	}
	mods, act, err := s.End()
	if err != nil {
		return MilterResult{}, err
	}
	r := ended("eom", act)
	for _, m := range mods {
		switch m.Code {
		case milter.ActAddHeader, milter.ActInsertHeader:
			value := m.HeaderValue
			if leadingSpace {
				value = strings.TrimPrefix(value, " ")
			}
			r.Headers = append(r.Headers, [2]string{m.HeaderName, value})
		case milter.ActChangeHeader:
			r.HeaderChanges = append(r.HeaderChanges, HeaderChange{int(m.HeaderIndex), m.HeaderName, m.HeaderValue})
		case milter.ActQuarantine:
			r.Quarantine = m.Reason
		}
	}
	return r, nil
}

func reply(act *milter.Action) string {
	if act.Code != milter.ActReplyCode {
		return ""
	}
	return fmt.Sprintf("%d %s", act.SMTPCode, strings.ReplaceAll(act.SMTPText, "%%", "%"))
}
