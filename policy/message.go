package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"
)

// MessageConfig configures the message checks (README, Message checks).
type MessageConfig struct {
	// MaxBytes bounds what a message may hold to be verified
	// (checks.message_max_bytes); a larger one is a temperror.
	MaxBytes int64
	// BulkHeaders are header fields that mark bulk mail besides List-Id,
	// List-Unsubscribe and Precedence: bulk or list (checks.bulk_headers).
	BulkHeaders []string
}

// Bounds on what one message costs, whatever its sender makes of it.
const (
	// maxHeaderBytes caps the header section kept for parsing: Postfix's
	// header_size_limit is 100 KiB per field, and a header of more than a
	// megabyte is not mail any receiver accepts.
	maxHeaderBytes = 1 << 20
	// maxSignatures caps the DKIM signatures verified; each costs a key
	// lookup and a hash of the body.
	maxSignatures = 8
)

// Message is a message streamed into the message checks, as it will
// leave: the front end writes the header fields ("Name: value" lines), an
// empty line and the body, in order, then calls Close. Nothing is held
// whole: the body goes through the DKIM verifier's hashes as it arrives.
// Write never fails; what the checks could not verify says so in their
// results.
type Message struct {
	e   *Engine
	max int64
	n   int64 // octets written

	header       bytes.Buffer // the header section, up to maxHeaderBytes
	inBody       bool
	lastCR       bool // the octet written last was CR
	lineStart    bool // the next octet starts a line
	unverifiable string
	fields       []headerField
	verifier     *verifierFeed
	streaming    bool // the verifier's goroutine reads the feed
	verifiedHere bool // or the message was verified at its end, here
	verified     chan struct{}
	verifs       []*dkim.Verification
	verifyErr    error
	keyMu        sync.Mutex
	keyRecords   map[string][]string // key record names asked, and their TXT answers
	closed       bool
}

// headerField is one field of the header section, unfolded.
type headerField struct{ name, value string }

// NewMessage starts a message for EvaluateMessage. Key records are looked
// up through the engine's caches as the verifier reaches them, each
// within one lookup's budget.
func (e *Engine) NewMessage() *Message {
	return &Message{
		e:          e,
		max:        e.cfg.Message.MaxBytes,
		lineStart:  true,
		verifier:   newVerifierFeed(),
		verified:   make(chan struct{}),
		keyRecords: map[string][]string{},
	}
}

// verifyAtEnd is how much of a message waits for its end to be verified
// in the caller's goroutine, which most messages are, with their keys
// cached: no goroutine and no hand-over per write. Past it, a verifier
// goroutine takes the message as it comes, so that none is held whole.
const verifyAtEnd = 64 << 10

// stream starts the verifier's goroutine on the feed.
func (m *Message) stream() {
	m.streaming = true
	go func() {
		defer close(m.verified)
		m.verifs, m.verifyErr = m.verify(context.Background(), m.verifier)
		// The verifier stops reading where it has what it needs (no
		// signature, a malformed one); the front end still writes the rest.
		io.Copy(io.Discard, m.verifier)
	}()
}

// verifyHere verifies a message that ended within verifyAtEnd in this
// goroutine, from the caches alone (warm.go). It reports false, having
// verified nothing, when a key record is not cached: the verifier's
// goroutine must look it up.
func (m *Message) verifyHere() bool {
	queued, err := m.verifier.contents()
	if err == io.EOF {
		run := &cacheOnlyRun{}
		verifs, verr := m.verify(context.WithValue(context.Background(), cacheOnlyKey{}, run), queued)
		if run.missed.Load() {
			return false
		}
		run.read.count(m.e)
		m.verifs, m.verifyErr = verifs, verr
	} else {
		m.verifyErr = err
	}
	m.verifiedHere = true
	close(m.verified)
	return true
}

// verify runs go-msgauth's verifier on r, looking keys up in ctx.
func (m *Message) verify(ctx context.Context, r io.Reader) ([]*dkim.Verification, error) {
	return dkim.VerifyWithOptions(r, &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return m.lookupKey(ctx, name) },
		MaxVerifications: maxSignatures,
	})
}

// lookupKey answers the verifier's key queries from the engine's caches.
func (m *Message) lookupKey(ctx context.Context, name string) ([]string, error) {
	e := m.e
	ctx, cancel := context.WithTimeout(ctx, e.resolver.budget)
	defer cancel()
	a, err := e.resolver.Lookup(ctx, name, dns.TypeTXT)
	var invalid *dnsError
	if errors.As(err, &invalid) && invalid.Kind == errInvalidName {
		return nil, err // a name no query can carry: no key, for good
	}
	if err != nil {
		return nil, temporaryError{err}
	}
	var txts []string
	if a.Kind == kindFound {
		txts = a.TXT
	}
	m.keyMu.Lock()
	m.keyRecords[strings.ToLower(strings.TrimSuffix(name, "."))] = txts
	m.keyMu.Unlock()
	if len(txts) == 0 {
		return nil, fmt.Errorf("%s has no TXT record (%s)", name, a.Kind)
	}
	return txts, nil
}

var crlf = []byte("\r\n")

// temporaryError marks a DNS error the verifier must take as temporary
// (go-msgauth asks net.Error), not as a missing key.
type temporaryError struct{ error }

func (temporaryError) Timeout() bool   { return false }
func (temporaryError) Temporary() bool { return true }

// Write takes the next octets of the message. Bare LF line ends become
// CRLF, as on the wire (RFC 5322 section 2.1): MTAs hand milters folded
// header values with LF, and saved messages often have LF alone.
func (m *Message) Write(p []byte) (int, error) {
	n := len(p)
	if m.closed || m.unverifiable != "" {
		return n, nil
	}
	m.n += int64(n)
	if m.max > 0 && m.n > m.max {
		m.stop(fmt.Sprintf("the message is larger than checks.message_max_bytes (%d octets): too large to verify here", m.max))
		return n, nil
	}
	// Whole chunks go through at once: only a bare LF splits one.
	from := 0
	for i := 0; i < len(p); {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		j += i
		if j == 0 && !m.lastCR || j > 0 && p[j-1] != '\r' {
			m.write(p[from:j])
			m.write(crlf)
			from = j + 1
		}
		i = j + 1
	}
	m.write(p[from:])
	return n, nil
}

// write passes normalised octets on: the header section is kept until its
// end, for the checks' own parsing, and goes to the verifier in one piece
// (one hand-over to its goroutine, not one per field); the body goes
// through as it comes.
func (m *Message) write(p []byte) {
	if len(p) == 0 || m.unverifiable != "" {
		return
	}
	m.lastCR = p[len(p)-1] == '\r'
	if m.inBody {
		m.feed(p)
		return
	}
	end := m.headerEnd(p)
	head := p
	if end >= 0 {
		head = p[:end]
	}
	if m.header.Len()+len(head) > maxHeaderBytes {
		m.stop(fmt.Sprintf("the header section is larger than %d octets: too large to verify here", maxHeaderBytes))
		return
	}
	m.header.Write(head)
	if end < 0 {
		return
	}
	m.inBody = true
	m.fields = parseHeader(m.header.Bytes())
	m.feed(m.header.Bytes())
	m.header = bytes.Buffer{}
	if end < len(p) {
		m.feed(p[end:])
	}
}

// unverified is the result of a check that needs the verification of a
// message mxguard's own bounds left unverified (too large, the decision
// deadline): a temperror that policy.on_temperror never turns into a
// deferral, since retrying the same message changes nothing.
func (m *Message) unverified() Result {
	return Result{Status: StatusTempError, Detail: m.unverifiable, ownBound: true}
}

// feed hands octets to the verifier.
func (m *Message) feed(p []byte) {
	if !m.streaming && m.verifier.Len()+len(p) > verifyAtEnd {
		m.stream()
	}
	m.verifier.Write(p)
}

// headerEnd is the index in p just past the empty line that ends the
// header section, or -1 when p does not reach it.
func (m *Message) headerEnd(p []byte) int {
	for i, c := range p {
		switch {
		case c == '\n':
			if m.lineStart {
				return i + 1
			}
			m.lineStart = true
		case c == '\r' && m.lineStart: // an empty line's CR, or a stray one
		default:
			m.lineStart = false
		}
	}
	return -1
}

// stop ends verification: the checks that need it report why.
func (m *Message) stop(reason string) {
	m.unverifiable = reason
	m.verifier.Close(errors.New(reason))
	m.header = bytes.Buffer{}
}

// Close ends the message and waits for the verifier.
func (m *Message) Close() error {
	m.end()
	m.verifyAtEnd()
	<-m.verified
	return nil
}

// verifyAtEnd verifies an ended message here if it can, or in the
// verifier's goroutine.
func (m *Message) verifyAtEnd() {
	if !m.streaming && !m.verifiedHere && !m.verifyHere() {
		m.stream()
	}
}

// end ends the message without waiting for the verifier, which finishes
// on its own (within a lookup's budget per key).
func (m *Message) end() {
	if m.closed {
		return
	}
	m.closed = true
	// A message without a body: end its last line, then its header.
	for range 2 {
		if m.inBody || m.unverifiable != "" {
			break
		}
		m.write(crlf)
	}
	m.verifier.Close(io.EOF)
	m.header = bytes.Buffer{}
}

// Discard stops the verification of a message that will not be judged
// (an aborted transaction, a connection gone), without waiting for the
// verifier. Unlike Write and Close, it may be called from any goroutine.
func (m *Message) Discard() { m.verifier.Close(errDiscarded) }

var errDiscarded = errors.New("the message was discarded")

// finish ends the message and waits for the verifier until ctx ends; a
// verification not done by then leaves the message unverifiable.
func (m *Message) finish(ctx context.Context) {
	m.end()
	m.verifyAtEnd()
	select {
	case <-m.verified:
	case <-ctx.Done():
		if m.unverifiable == "" {
			m.unverifiable = "the DKIM verification did not finish before the decision deadline (key lookups)"
		}
	}
}

// parseHeader splits a header section into unfolded fields (RFC 5322
// section 2.2.3) exactly as go-msgauth's verifier does, so that the n-th
// DKIM-Signature here is its n-th: up to the first empty line, a line
// that starts with white space continues the field before it (if any),
// and a field's name is what comes before its first colon, trimmed.
func parseHeader(section []byte) []headerField {
	var fields []headerField
	var name string
	var value strings.Builder
	open := false
	flush := func() {
		if open {
			fields = append(fields, headerField{name, strings.TrimSpace(value.String())})
		}
	}
	for _, line := range bytes.Split(section, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if open && (line[0] == ' ' || line[0] == '\t') {
			value.Write(line)
			continue
		}
		flush()
		key, v, _ := bytes.Cut(line, []byte(":"))
		name = strings.TrimSpace(string(key))
		value.Reset()
		value.Write(v)
		open = true
	}
	flush()
	return fields
}

// Header returns the values of every header field named name, unfolded,
// once the header section has been written.
func (m *Message) Header(name string) []string {
	var values []string
	for _, f := range m.fields {
		if strings.EqualFold(f.name, name) {
			values = append(values, f.value)
		}
	}
	return values
}

// keyRecord returns the TXT answers of a key record name the verifier
// asked for.
func (m *Message) keyRecord(name string) ([]string, bool) {
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	txts, ok := m.keyRecords[name]
	return txts, ok
}

// EvaluateMessage runs the message checks for m on the envelope's report
// (Evaluate of req), and returns that report with their results in
// catalogue order and the verdict of both. req is the envelope's request:
// SPF alignment goes by its sender and the report's spf.relay.
func (e *Engine) EvaluateMessage(ctx context.Context, envelope *Report, req Request, m *Message) *Report {
	began := time.Now()
	m.finish(ctx)
	ev := newEvaluation(e, req)
	ev.msg, ev.envelope = m, envelope
	results := make([]Result, 0, len(e.checks))
	for i, c := range e.checks {
		if c.chain != chainMessage {
			if r := envelope.Check(c.id); r.ID != "" {
				results = append(results, r)
			}
			continue
		}
		results = append(results, e.runMessageCheck(ctx, ev, i))
	}
	rep := *envelope
	rep.Checks = results
	rep.Elapsed = envelope.Elapsed + time.Since(began)
	rep.Incomplete = envelope.Incomplete || ctx.Err() != nil
	rep.Decision = e.cfg.Policy.Decide(rep.Domain, rep.ClientIP, results)
	return &rep
}

// runMessageCheck is runCheck, with a panic contained to its check.
func (e *Engine) runMessageCheck(ctx context.Context, ev *evaluation, i int) (r Result) {
	defer func() {
		if v := recover(); v != nil { // a bug must not take the daemon down
			r = Result{ID: e.checks[i].id, Status: StatusTempError, Detail: fmt.Sprintf("internal error: %v", v)}
		}
	}()
	return e.runCheck(ctx, ev, i)
}

// messageSkip says why the message checks do not apply ("" = they do).
func (ev *evaluation) messageSkip() string {
	switch {
	case ev.msg == nil:
		return "no message to check"
	case ev.sender.Null:
		return "a bounce (null sender <>): no author's mail to authenticate"
	}
	if a := ev.author(); a.domain != "" && ev.e.cfg.Policy.DomainAllowed(a.domain) {
		return fmt.Sprintf("%s is allow-listed (policy.allow_domains)", a.domain)
	}
	return ""
}

// authorFacts is the message's RFC5322.From: its one domain, or why
// there is none to judge.
type authorFacts struct {
	domain  string
	problem string // the From field is not one parseable address
}

func (ev *evaluation) author() authorFacts {
	return ev.authorFacts.get(func() authorFacts {
		froms := ev.msg.Header("From")
		switch len(froms) {
		case 0:
			return authorFacts{}
		case 1:
		default:
			return authorFacts{problem: fmt.Sprintf("the message has %d From fields; receivers refuse it (RFC 5322 section 3.6 allows one)", len(froms))}
		}
		value := froms[0][:min(len(froms[0]), maxFromField)]
		list, err := ParseAddressList(value)
		if err != nil {
			return authorFacts{problem: fmt.Sprintf("the From field does not parse (%s): %s", Printable(err.Error(), 80), Printable(value, 120))}
		}
		if len(list) != 1 {
			return authorFacts{problem: fmt.Sprintf("the From field has %d addresses; DMARC needs exactly one author domain (RFC 7489 section 6.6.1)", len(list))}
		}
		s := ParseSender(list[0].Address)
		if s.Err != nil || s.Domain == "" {
			return authorFacts{problem: fmt.Sprintf("the From address %s has no valid domain", Printable(list[0].Address, 120))}
		}
		return authorFacts{domain: s.Domain}
	})
}

// maxFromField bounds the From field parsed for its address.
const maxFromField = 64 << 10

// signatureFacts is one DKIM signature of the message and what verifying
// it gave.
type signatureFacts struct {
	domain, selector string
	headerKeys       []string
	err              error // nil: it verifies
}

// keyName is the signature's key record name.
func (s signatureFacts) keyName() string {
	return strings.ToLower(s.selector + "._domainkey." + s.domain)
}

func (s signatureFacts) String() string {
	return fmt.Sprintf("d=%s s=%s", Printable(s.domain, 80), Printable(s.selector, 40))
}

func (ev *evaluation) signatures() []signatureFacts {
	return ev.signatureFacts.get(func() []signatureFacts {
		fields := ev.msg.Header(dkimField)
		sigs := make([]signatureFacts, 0, len(ev.msg.verifs))
		for i, v := range ev.msg.verifs {
			s := signatureFacts{domain: strings.ToLower(v.Domain), headerKeys: v.HeaderKeys, err: v.Err}
			if i < len(fields) {
				s.selector = strings.Join(strings.Fields(tagValue(fields[i], "s")), "")
				if s.domain == "" {
					s.domain = strings.Join(strings.Fields(tagValue(fields[i], "d")), "")
				}
			}
			sigs = append(sigs, s)
		}
		return sigs
	})
}

const dkimField = "DKIM-Signature"

// discovered is a DMARC discovery or the DNS error that ended it.
type discovered struct {
	d   dmarcDiscovery
	err error
}

// alignedFacts are the aligned signatures, or the DNS error that left
// alignment unknown.
type alignedFacts struct {
	sigs []signatureFacts
	err  error
}

// authorPolicy is the author domain's DMARC discovery.
func (ev *evaluation) authorPolicy(ctx context.Context) (dmarcDiscovery, error) {
	got := ev.authorDMARC.get(func() discovered {
		d, err := ev.walkDMARC(ctx, ev.author().domain)
		return discovered{d, err}
	})
	return got.d, got.err
}

// alignedSignatures are the verifying signatures whose d= aligns with the
// author domain under the author's adkim (RFC 7489 section 3.1.1).
func (ev *evaluation) alignedSignatures(ctx context.Context) ([]signatureFacts, error) {
	got := ev.dkimAligned.get(func() alignedFacts {
		author := ev.author().domain
		if author == "" {
			return alignedFacts{}
		}
		pol, err := ev.authorPolicy(ctx)
		if err != nil {
			return alignedFacts{err: err}
		}
		mode := dmarc.AlignmentMode(dmarc.AlignmentRelaxed)
		if pol.record != nil && pol.record.DKIMAlignment != "" {
			mode = pol.record.DKIMAlignment
		}
		var aligned []signatureFacts
		for _, s := range ev.signatures() {
			if s.err != nil {
				continue
			}
			ok, err := ev.aligned(ctx, author, s.domain, mode, pol.org)
			if err != nil {
				return alignedFacts{err: err}
			}
			if ok {
				aligned = append(aligned, s)
			}
		}
		return alignedFacts{sigs: aligned}
	})
	return got.sigs, got.err
}
