package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ReadDocument parses data, the text of file, as one YAML document and
// returns its top node, or nil when the document is empty. A syntax error
// names the line to fix; a second document is an error, whose message
// says that what (e.g. "the configuration") is one document.
func ReadDocument(file string, data []byte, what string) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, syntaxError(file, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, syntaxError(file, data, err)
		}
		return nil, fmt.Errorf("%s:%d: a second YAML document; %s is one document", file, extra.Line, what)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return deref(doc.Content[0]), nil
}

// Walker reads a YAML node tree strictly: an unknown key, a key set twice
// or a value of the wrong kind is an error that names the file and line.
// The configuration and the sandbox spec (docs/SANDBOX.md) are both read
// with it, so that their messages agree.
type Walker struct {
	File string
	// Dotted names a key below where as where.key (probe.port), as the
	// configuration's keys are named; otherwise as "where: key".
	Dotted bool
}

// Errorf formats an error at the line of n: "FILE:LINE: message".
func (w Walker) Errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", w.File, n.Line, fmt.Sprintf(format, args...))
}

// Key names key in the mapping where; where is "" at the top level.
func (w Walker) Key(where, key string) string {
	switch {
	case where == "":
		return key
	case w.Dotted:
		return where + "." + key
	}
	return where + ": " + key
}

// Pairs calls fn for each entry of the mapping n, whose keys are values
// (names, addresses) rather than known keys; where names n in errors.
func (w Walker) Pairs(n *yaml.Node, where string, fn func(k, v *yaml.Node) error) error {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return w.Errorf(n, "%swant a mapping (key: value lines), got %s", wherePrefix(where), KindOf(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k.Kind != yaml.ScalarNode {
			return w.Errorf(k, "%swant a single value as the key, got %s", wherePrefix(where), KindOf(k))
		}
		if err := fn(k, deref(n.Content[i+1])); err != nil {
			return err
		}
	}
	return nil
}

// Fields calls fn for each entry of the mapping n, whose keys must be
// among known and each set at most once.
func (w Walker) Fields(n *yaml.Node, where string, known []string, fn func(key string, k, v *yaml.Node) error) error {
	loc := "at the top level"
	if where != "" {
		loc = "in " + where
	}
	seen := map[string]int{}
	return w.Pairs(n, where, func(k, v *yaml.Node) error {
		if !slices.Contains(known, k.Value) {
			return w.Errorf(k, "unknown key %q %s%s", k.Value, loc, hint(k.Value, known))
		}
		if line, ok := seen[k.Value]; ok {
			return w.Errorf(k, "%s is set twice (first on line %d)", w.Key(where, k.Value), line)
		}
		seen[k.Value] = k.Line
		return fn(k.Value, k, v)
	})
}

// Scalar returns the text of the single value n; where names it in errors.
func (w Walker) Scalar(n *yaml.Node, where string) (string, error) {
	n = deref(n)
	if IsNull(n) {
		return "", w.Errorf(n, "%shas no value", wherePrefix(where))
	}
	if n.Kind != yaml.ScalarNode {
		return "", w.Errorf(n, "%swant a single value, got %s", wherePrefix(where), KindOf(n))
	}
	return n.Value, nil
}

// IsNull says whether n is empty: "key:" with no value, or null.
func IsNull(n *yaml.Node) bool {
	n = deref(n)
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// KindOf describes n for an error: "a mapping", "a list", "nothing" or
// the value quoted.
func KindOf(n *yaml.Node) string {
	n = deref(n)
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case IsNull(n):
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func wherePrefix(where string) string {
	if where == "" {
		return ""
	}
	return where + ": "
}

// maxListedKeys is the most known keys an unknown key's error lists: a
// short list is quicker to read than to look up, a long one buries the
// message.
const maxListedKeys = 8

// hint returns what follows an unknown key's error: the closest known key
// and, when they are few, all of them.
func hint(key string, known []string) string {
	var parts []string
	if s := suggestion(key, known); s != "" {
		parts = append(parts, fmt.Sprintf("did you mean %q?", s))
	}
	if len(known) <= maxListedKeys {
		parts = append(parts, "known: "+strings.Join(known, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " ") + ")"
}

// suggestion returns the known key closest to key, if one is close; of
// two as close, the one that starts like key ("tx" is "txt", not "mx").
func suggestion(key string, known []string) string {
	best, bestDist, bestPrefix := "", len(key)/2+2, 0
	for _, k := range known {
		d, p := editDistance(key, k), commonPrefix(key, k)
		if d < bestDist || d == bestDist && best != "" && p > bestPrefix {
			best, bestDist, bestPrefix = k, d, p
		}
	}
	return best
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parseYAML parses every document of data.
func parseYAML(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

var yamlPrefix = regexp.MustCompile(`^yaml: (line [0-9]+: )?`)

// syntaxError formats err, yaml.v3's error for data, with the line where
// the text stops being YAML: the lines before it parse. That is the bad line
// itself or, for a quote or a [ ] or { } list that never closes or holds the
// error, the line where it opens.
func syntaxError(name string, data []byte, err error) error {
	line := brokenLine(data)
	msg := yamlPrefix.ReplaceAllString(err.Error(), "")
	text := ""
	if ends := lineEnds(data); line <= len(ends) {
		start := 0
		if line > 1 {
			start = ends[line-2]
		}
		text = string(data[start:ends[line-1]])
	}
	indent := text[:len(text)-len(strings.TrimLeft(text, " \t"))]
	switch {
	case strings.Contains(indent, "\t"):
		msg = "a tab in the indentation; YAML indents with spaces only"
	case msg == "found unexpected end of stream":
		msg = "a quoted value that starts here is never closed"
	case msg == "did not find expected key", msg == "did not find expected '-' indicator":
		msg += "; check the indentation of this line"
	case msg == "mapping values are not allowed in this context":
		msg += "; check the indentation, or quote a value that contains \": \""
	case strings.ContainsAny(text, "[{") && (msg == "did not find expected node content" ||
		msg == "did not find expected ',' or ']'" || msg == "did not find expected ',' or '}'"):
		msg += " in the [ ] or { } list that starts on this line"
	}
	return fmt.Errorf("%s:%d: %s", name, line, msg)
}

// brokenLine returns the 1-based number of the line after the last one up
// to which data parses. Walking back from the end finds it even past a
// list that spans lines; past a budget a bisection finishes the search.
func brokenLine(data []byte) int {
	ends := lineEnds(data)
	prefix := func(n int) []byte {
		if n == 0 {
			return nil
		}
		return data[:ends[n-1]]
	}
	budget := 8 << 20 // bytes parsed
	bad := len(ends)  // the whole text does not parse
	for n := bad - 1; n > 0; n-- {
		if budget <= 0 {
			good := 0
			for good+1 < bad {
				mid := (good + bad) / 2
				if parseYAML(prefix(mid)) == nil {
					good = mid
				} else {
					bad = mid
				}
			}
			return bad
		}
		budget -= ends[n-1]
		if parseYAML(prefix(n)) == nil {
			return n + 1
		}
		bad = n
	}
	return 1
}

// lineEnds returns the offset just past each line of data.
func lineEnds(data []byte) []int {
	var ends []int
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}
