package dkim

import (
	"io"
	"strings"
)

// Canonicalization is a canonicalization algorithm.
type Canonicalization string

const (
	CanonicalizationSimple  Canonicalization = "simple"
	CanonicalizationRelaxed                  = "relaxed"
)

type canonicalizer interface {
	CanonicalizeHeader(s string) string
	CanonicalizeBody(w io.Writer) io.WriteCloser
}

var canonicalizers = map[Canonicalization]canonicalizer{
	CanonicalizationSimple:  new(simpleCanonicalizer),
	CanonicalizationRelaxed: new(relaxedCanonicalizer),
}

// crlfRun is a run of CRLFs, written out in pieces.
var crlfRun = []byte(strings.Repeat(crlf, 256))

// writeCRLFs writes n CRLFs to w.
func writeCRLFs(w io.Writer, n int) error {
	for n > 0 {
		k := len(crlfRun) / 2
		if n < k {
			k = n
		}
		if _, err := w.Write(crlfRun[:2*k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// outPiece is about what a body canonicalizer gathers before it writes
// (at most twice as much, and a piece of crlfRun): few writes to the
// hash, and little memory.
const outPiece = 4096

// flushCRLFs adds n CRLFs held back to out, the output of a Write so
// far, when they fit in a piece of crlfRun: the hash gets one write per
// Write, not two per line. A longer run writes out and then the CRLFs in
// pieces, so that memory stays bounded.
func flushCRLFs(w io.Writer, out []byte, n int) ([]byte, error) {
	if n <= len(crlfRun)/2 {
		return append(out, crlfRun[:2*n]...), nil
	}
	if _, err := w.Write(out); err != nil {
		return out, err
	}
	return out[:0], writeCRLFs(w, n)
}

type simpleCanonicalizer struct{}

func (c *simpleCanonicalizer) CanonicalizeHeader(s string) string {
	return s
}

// simpleBodyCanonicalizer holds back the CRLFs at the end of what it was
// written, as a count: they are written when more text follows, dropped
// at the end (RFC 6376 section 3.4.3). A lone LF is a CRLF.
type simpleBodyCanonicalizer struct {
	w     io.Writer
	crlfs int  // CRLFs held back
	cr    bool // and after them a CR, which may begin a CRLF
	buf   []byte
}

func (c *simpleBodyCanonicalizer) Write(b []byte) (int, error) {
	if c.buf == nil {
		c.buf = make([]byte, 0, 2*outPiece+len(crlfRun))
	}
	out := c.buf[:0]
	for i := 0; i < len(b); {
		ch := b[i]
		switch {
		case ch == '\n':
			c.crlfs++
			c.cr = false
			i++
			continue
		case ch == '\r' && !c.cr:
			c.cr = true
			i++
			continue
		}
		// Text, or a CR after a CR that is text then.
		if c.crlfs > 0 {
			var err error
			if out, err = flushCRLFs(c.w, out, c.crlfs); err != nil {
				return i, err
			}
			c.crlfs = 0
		}
		if ch == '\r' {
			out = append(out, '\r')
			i++
			continue
		}
		if c.cr {
			out = append(out, '\r')
			c.cr = false
		}
		// The text up to the next line end, in one piece of at most outPiece.
		j, end := i+1, i+outPiece
		if end > len(b) {
			end = len(b)
		}
		for j < end && b[j] != '\r' && b[j] != '\n' {
			j++
		}
		out = append(out, b[i:j]...)
		i = j
		if len(out) >= outPiece {
			if _, err := c.w.Write(out); err != nil {
				return i, err
			}
			out = out[:0]
		}
	}
	c.buf = out[:0]
	if len(out) > 0 {
		if _, err := c.w.Write(out); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}

func (c *simpleBodyCanonicalizer) Close() error {
	// A CR at the very end is text, and so are the CRLFs before it.
	if c.cr {
		if err := writeCRLFs(c.w, c.crlfs); err != nil {
			return err
		}
		if _, err := c.w.Write([]byte{'\r'}); err != nil {
			return err
		}
	}
	c.crlfs, c.cr = 0, false
	_, err := c.w.Write([]byte(crlf))
	return err
}

func (c *simpleCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &simpleBodyCanonicalizer{w: w}
}

type relaxedCanonicalizer struct{}

func (c *relaxedCanonicalizer) CanonicalizeHeader(s string) string {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return strings.TrimSpace(strings.ToLower(s)) + ":" + crlf
	}

	k = strings.TrimSpace(strings.ToLower(k))
	v = strings.Join(strings.FieldsFunc(v, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}), " ")
	return k + ":" + v + crlf
}

// relaxedBodyCanonicalizer holds back the line ends after the last text
// it was written, as a count of CRLFs while they are only CRLFs, and
// whether whitespace came after them: they are written when more text
// follows, dropped at the end (RFC 6376 section 3.4.4). A lone LF is a
// CRLF. A CR without LF counts as a line end too, as it always did here:
// from the first one in a run on, the run is held as it came, in more.
type relaxedBodyCanonicalizer struct {
	w       io.Writer
	crlfs   int    // CRLFs held back
	more    []byte // and after them the rest of the run, from a lone CR
	cr      bool   // and after that a CR, which may begin a CRLF
	wsp     bool   // whitespace since the last line end or text
	written bool
	buf     []byte
}

// lineEnd adds a CRLF, or a lone CR, to the run held back.
func (c *relaxedBodyCanonicalizer) lineEnd(s string) {
	if s == crlf && len(c.more) == 0 {
		c.crlfs++
	} else {
		c.more = append(c.more, s...)
	}
}

func (c *relaxedBodyCanonicalizer) Write(b []byte) (int, error) {
	out := c.buf[:0]
	for i, ch := range b {
		switch ch {
		case '\n':
			c.lineEnd(crlf)
			c.cr, c.wsp = false, false
			continue
		case '\r':
			if c.cr {
				c.lineEnd("\r")
			}
			c.cr, c.wsp = true, false
			continue
		}
		if c.cr {
			c.lineEnd("\r")
			c.cr = false
		}
		if ch == ' ' || ch == '\t' {
			c.wsp = true
			continue
		}
		if c.crlfs > 0 {
			var err error
			if out, err = flushCRLFs(c.w, out, c.crlfs); err != nil {
				return i, err
			}
			c.crlfs = 0
		}
		out = append(out, c.more...)
		c.more = c.more[:0]
		if c.wsp {
			out = append(out, ' ')
			c.wsp = false
		}
		out = append(out, ch)
		c.written = true
	}
	c.buf = out[:0]
	if len(out) > 0 {
		if _, err := c.w.Write(out); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}

func (c *relaxedBodyCanonicalizer) Close() error {
	c.crlfs, c.more, c.cr, c.wsp = 0, nil, false, false
	if c.written {
		if _, err := c.w.Write([]byte(crlf)); err != nil {
			return err
		}
	}
	return nil
}

func (c *relaxedCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &relaxedBodyCanonicalizer{w: w}
}

type limitedWriter struct {
	W io.Writer
	N int64
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	if w.N <= 0 {
		return len(b), nil
	}

	skipped := 0
	if int64(len(b)) > w.N {
		b = b[:w.N]
		skipped = int(int64(len(b)) - w.N)
	}

	n, err := w.W.Write(b)
	w.N -= int64(n)
	return n + skipped, err
}
