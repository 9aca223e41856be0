package dkim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

const crlf = "\r\n"

type header []string

// readHeader reads the header fields, each unfolded line by line into a
// builder: adding each continuation line to the field's string copied the
// field so far, the square of its length for a field of many short lines.
func readHeader(r *bufio.Reader) (header, error) {
	tr := textproto.NewReader(r)

	var h header
	var field strings.Builder
	end := func() {
		if field.Len() > 0 {
			h = append(h, field.String())
			field.Reset()
		}
	}
	for {
		l, err := tr.ReadLine()
		if err != nil {
			end()
			return h, fmt.Errorf("failed to read header: %v", err)
		}

		if len(l) == 0 {
			break
		} else if field.Len() > 0 && (l[0] == ' ' || l[0] == '\t') {
			// This is a continuation line
			field.WriteString(l)
			field.WriteString(crlf)
		} else {
			end()
			field.WriteString(l)
			field.WriteString(crlf)
		}
	}
	end()

	return h, nil
}

func writeHeader(w io.Writer, h header) error {
	for _, kv := range h {
		if _, err := w.Write([]byte(kv)); err != nil {
			return err
		}
	}
	_, err := w.Write([]byte(crlf))
	return err
}

func foldHeaderField(kv string) string {
	buf := bytes.NewBufferString(kv)

	line := make([]byte, 75) // 78 - len("\r\n\s")
	first := true
	var fold strings.Builder
	for len, err := buf.Read(line); err != io.EOF; len, err = buf.Read(line) {
		if first {
			first = false
		} else {
			fold.WriteString("\r\n ")
		}
		fold.Write(line[:len])
	}

	return fold.String() + crlf
}

func parseHeaderField(s string) (string, string) {
	key, value, _ := strings.Cut(s, ":")
	return strings.TrimSpace(key), strings.TrimSpace(value)
}

func parseHeaderParams(s string) (map[string]string, error) {
	pairs := strings.Split(s, ";")
	params := make(map[string]string)
	for _, s := range pairs {
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			if strings.TrimSpace(s) == "" {
				continue
			}
			return params, errors.New("dkim: malformed header params")
		}

		trimmedKey := strings.TrimSpace(key)
		_, present := params[trimmedKey]
		if present {
			return params, errors.New("dkim: duplicate tag name")
		}
		params[trimmedKey] = strings.TrimSpace(value)
	}
	return params, nil
}

func formatHeaderParams(headerFieldName string, params map[string]string) string {
	keys, bvalue, bfound := sortParams(params)

	s := headerFieldName + ":"
	var line string

	for _, k := range keys {
		v := params[k]
		nextLength := 3 + len(line) + len(v) + len(k)
		if nextLength > 75 {
			s += line + crlf
			line = ""
		}
		line = fmt.Sprintf("%v %v=%v;", line, k, v)
	}

	if line != "" {
		s += line
	}

	if bfound {
		bfiled := foldHeaderField(" b=" + bvalue)
		s += crlf + bfiled
	}

	return s
}

func sortParams(params map[string]string) ([]string, string, bool) {
	keys := make([]string, 0, len(params))
	bfound := false
	var bvalue string
	for k := range params {
		if k == "b" {
			bvalue = params["b"]
			bfound = true
		} else {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, bvalue, bfound
}

// headerPicker hands out the fields of h named by a signature's h= tag,
// each name's from the bottom up (RFC 6376 section 5.4.2). Fields are
// indexed by name once: scanning them all for each h= entry made a
// hostile signature cost fields times entries.
type headerPicker struct {
	h      header
	fields map[string][]int // foldName of a name: its fields' indexes
	picked map[string]int
}

func newHeaderPicker(h header) *headerPicker {
	p := &headerPicker{
		h:      h,
		fields: make(map[string][]int),
		picked: make(map[string]int),
	}
	for i, kv := range h {
		k, _ := parseHeaderField(kv)
		name := foldName(k)
		p.fields[name] = append(p.fields[name], i)
	}
	return p
}

func (p *headerPicker) Pick(key string) string {
	key = strings.ToLower(key)

	at := p.picked[key]
	fields := p.fields[foldName(key)]
	if at >= len(fields) {
		return ""
	}
	p.picked[key]++
	return p.h[fields[len(fields)-1-at]]
}

// foldName is the same for two names if and only if strings.EqualFold
// holds for them, which is how names were matched: each rune becomes the
// least of its case-folding orbit (invalid UTF-8 becomes U+FFFD, as
// EqualFold reads it).
func foldName(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// The least of an ASCII letter's orbit is its upper case
		// (K is below the Kelvin sign, S below the long s).
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < least {
				least = f
			}
		}
		b.WriteRune(least)
	}
	return b.String()
}
