package dkim

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"runtime"
	"strings"
	"testing"
)

// The canonicalizers and the header picker of go-msgauth v0.7.0, before
// the patch (see ../PATCHES.md), as references.

type v070CRLFFixer struct {
	cr bool
}

func (cf *v070CRLFFixer) Fix(b []byte) []byte {
	res := make([]byte, 0, len(b))
	for _, ch := range b {
		prevCR := cf.cr
		cf.cr = false
		switch ch {
		case '\r':
			cf.cr = true
		case '\n':
			if !prevCR {
				res = append(res, '\r')
			}
		}
		res = append(res, ch)
	}
	return res
}

type v070SimpleBody struct {
	w         io.Writer
	crlfBuf   []byte
	crlfFixer v070CRLFFixer
}

func (c *v070SimpleBody) Write(b []byte) (int, error) {
	written := len(b)
	b = append(c.crlfBuf, b...)
	b = c.crlfFixer.Fix(b)
	end := len(b)
	if end > 0 && b[end-1] == '\r' {
		end--
	}
	for end >= 2 {
		prev := b[end-2]
		cur := b[end-1]
		if prev != '\r' || cur != '\n' {
			break
		}
		end -= 2
	}
	c.crlfBuf = b[end:]
	var err error
	if end > 0 {
		_, err = c.w.Write(b[:end])
	}
	return written, err
}

func (c *v070SimpleBody) Close() error {
	if len(c.crlfBuf) > 0 && c.crlfBuf[len(c.crlfBuf)-1] == '\r' {
		if _, err := c.w.Write(c.crlfBuf); err != nil {
			return err
		}
	}
	c.crlfBuf = nil
	_, err := c.w.Write([]byte(crlf))
	return err
}

type v070RelaxedBody struct {
	w         io.Writer
	crlfBuf   []byte
	wsp       bool
	written   bool
	crlfFixer v070CRLFFixer
}

func (c *v070RelaxedBody) Write(b []byte) (int, error) {
	written := len(b)
	b = c.crlfFixer.Fix(b)
	canonical := make([]byte, 0, len(b))
	for _, ch := range b {
		if ch == ' ' || ch == '\t' {
			c.wsp = true
		} else if ch == '\r' || ch == '\n' {
			c.wsp = false
			c.crlfBuf = append(c.crlfBuf, ch)
		} else {
			if len(c.crlfBuf) > 0 {
				canonical = append(canonical, c.crlfBuf...)
				c.crlfBuf = c.crlfBuf[:0]
			}
			if c.wsp {
				canonical = append(canonical, ' ')
				c.wsp = false
			}
			canonical = append(canonical, ch)
		}
	}
	if !c.written && len(canonical) > 0 {
		c.written = true
	}
	_, err := c.w.Write(canonical)
	return written, err
}

func (c *v070RelaxedBody) Close() error {
	if c.written {
		if _, err := c.w.Write([]byte(crlf)); err != nil {
			return err
		}
	}
	return nil
}

func v070Pick(h header, picked map[string]int, key string) string {
	key = strings.ToLower(key)
	at := picked[key]
	for i := len(h) - 1; i >= 0; i-- {
		kv := h[i]
		k, _ := parseHeaderField(kv)
		if !strings.EqualFold(k, key) {
			continue
		}
		if at == 0 {
			picked[key]++
			return kv
		}
		at--
	}
	return ""
}

// canonicalize writes body to wc in chunks of the sizes given, in turn.
func canonicalize(t *testing.T, wc io.WriteCloser, body []byte, sizes []int) {
	for i := 0; len(body) > 0; i++ {
		n := sizes[i%len(sizes)]
		if n > len(body) {
			n = len(body)
		}
		if _, err := wc.Write(body[:n]); err != nil {
			t.Fatal(err)
		}
		body = body[n:]
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
}

// randomBody is mostly line ends and whitespace, with CRs and LFs alone.
func randomBody(r *rand.Rand) []byte {
	const alphabet = "\r\n\r\n\r\n\r\n \t\r\nxy"
	b := make([]byte, r.Intn(200))
	for i := range b {
		b[i] = alphabet[r.Intn(len(alphabet))]
	}
	return b
}

// randomText is mostly text, in runs of up to a few dozen octets.
func randomText(r *rand.Rand) []byte {
	const alphabet = "\r\n \tabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, r.Intn(2000))
	for i := range b {
		b[i] = alphabet[r.Intn(len(alphabet))]
	}
	return b
}

func TestBodyCanonicalizersAsInV070(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		body := randomBody(r)
		if i%2 == 1 {
			body = randomText(r)
		}
		sizes := []int{1 + r.Intn(len(body)+1), 1 + r.Intn(4), 1 + r.Intn(16)}
		var want, got bytes.Buffer
		canonicalize(t, &v070SimpleBody{w: &want}, body, []int{len(body) + 1})
		canonicalize(t, new(simpleCanonicalizer).CanonicalizeBody(&got), body, sizes)
		if got.String() != want.String() {
			t.Fatalf("simple %q in chunks of %v: %q, want %q", body, sizes, got.String(), want.String())
		}
		want.Reset()
		got.Reset()
		canonicalize(t, &v070RelaxedBody{w: &want}, body, []int{len(body) + 1})
		canonicalize(t, new(relaxedCanonicalizer).CanonicalizeBody(&got), body, sizes)
		if got.String() != want.String() {
			t.Fatalf("relaxed %q in chunks of %v: %q, want %q", body, sizes, got.String(), want.String())
		}
	}
}

// Runs of CRLFs longer than writeCRLFs writes at once.
func TestBodyCanonicalizersLongRuns(t *testing.T) {
	body := []byte(strings.Repeat("\r\n", 1000) + "a" + strings.Repeat(" \r\n", 1000) + "b\r" + strings.Repeat("\r\n", 1000))
	for _, sizes := range [][]int{{1}, {7}, {4096}, {len(body)}} {
		var want, got bytes.Buffer
		canonicalize(t, &v070SimpleBody{w: &want}, body, sizes)
		canonicalize(t, new(simpleCanonicalizer).CanonicalizeBody(&got), body, sizes)
		if got.String() != want.String() {
			t.Errorf("simple in chunks of %v: differs", sizes)
		}
		want.Reset()
		got.Reset()
		canonicalize(t, &v070RelaxedBody{w: &want}, body, sizes)
		canonicalize(t, new(relaxedCanonicalizer).CanonicalizeBody(&got), body, sizes)
		if got.String() != want.String() {
			t.Errorf("relaxed in chunks of %v: differs", sizes)
		}
	}
}

func TestHeaderPickerAsInV070(t *testing.T) {
	names := []string{"To", "to", "TO", "Subject", "subject ", "k", "K", "\u212a", "s", "\u017f", "İ", "i", "\xff", "\xfe", "\ufffd", ""}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		var h header
		for n := r.Intn(12); n > 0; n-- {
			h = append(h, names[r.Intn(len(names))]+": "+string(rune('a'+r.Intn(26)))+"\r\n")
		}
		p := newHeaderPicker(h)
		picked := map[string]int{}
		for n := r.Intn(16); n > 0; n-- {
			key := names[r.Intn(len(names))]
			if got, want := p.Pick(key), v070Pick(h, picked, key); got != want {
				t.Fatalf("Pick(%q) in %q: %q, want %q", key, h, got, want)
			}
		}
	}
}

// A field folded into many short lines: adding each line to the field's
// string allocated the square of its length (50000 lines: 5 GB).
func TestReadHeaderOfManyContinuationLines(t *testing.T) {
	const lines = 50000
	raw := "From: a@example.org\r\nX-Folded: a" + strings.Repeat("\r\n b", lines) + "\r\nTo: b@example.org\r\n\r\n"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h, err := readHeader(bufio.NewReader(strings.NewReader(raw)))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[1] != "X-Folded: a"+strings.Repeat("\r\n b", lines)+"\r\n" || h[2] != "To: b@example.org\r\n" {
		t.Fatalf("readHeader: %d fields, %.40q", len(h), h)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("readHeader allocated %d octets for a header of %d", n, len(raw))
	}
}

// A body without line ends reaches the hash in pieces of about outPiece.
func TestSimpleBodyWritesInPieces(t *testing.T) {
	var w maxWrite
	wc := new(simpleCanonicalizer).CanonicalizeBody(&w)
	if _, err := wc.Write(bytes.Repeat([]byte("x"), 64<<10)); err != nil {
		t.Fatal(err)
	}
	wc.Close()
	if w.max > 2*outPiece+len(crlfRun) {
		t.Errorf("a write of %d octets", w.max)
	}
}

type maxWrite struct{ max int }

func (w *maxWrite) Write(p []byte) (int, error) {
	if len(p) > w.max {
		w.max = len(p)
	}
	return len(p), nil
}
