package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder walks the YAML tree against the Go types, so that every unknown
// key, duplicate key and bad value is reported with its file and line.
type decoder struct {
	file  string
	lines map[string]int // dotted key -> line it was set on
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) decode(n *yaml.Node, out any, path string) error {
	return d.value(n, reflect.ValueOf(out).Elem(), path)
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	custom := v.Addr().Type().Implements(unmarshalerType)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && (custom || v.Kind() != reflect.Slice && v.Kind() != reflect.Struct) {
		return d.errorf(n, path, "has no value") // an empty list or section is fine; an empty value is a mistake
	}
	if custom {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			return d.wrap(n, path, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.mapping(n, v, path)
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, path, "want a list, got a %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.value(item, s.Index(i), path); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, path, "want a single value, got a %s", kindName(n))
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return d.errorf(n, path, "%q is not a valid %s", n.Value, typeName(v.Type()))
	}
	return nil
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an empty section keeps its defaults
	}
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, path, "want a mapping (key: value lines), got a %s", kindName(n))
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			fields[tag] = i
			names = append(names, tag)
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			where := "at the top level"
			if path != "" {
				where = "in " + path
			}
			return fmt.Errorf("%s:%d: unknown key %q %s%s", d.file, k.Line, k.Value, where, suggest(k.Value, names))
		}
		if seen[k.Value] {
			return fmt.Errorf("%s:%d: %s is set twice", d.file, k.Line, key)
		}
		seen[k.Value] = true
		d.lines[key] = k.Line
		if err := d.value(val, v.Field(idx), key); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) wrap(n *yaml.Node, path string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s: %s", d.file, le.line, path, le.msg)
	}
	return d.errorf(n, path, "%v", err)
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s: %s", d.file, n.Line, path, fmt.Sprintf(format, args...))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int64:
		return "whole number"
	case reflect.Uint16:
		return "number from 0 to 65535"
	case reflect.String:
		return "string"
	}
	return t.String()
}

// suggest returns ` (did you mean "x"?)` for the closest known key.
func suggest(key string, known []string) string {
	best, bestDist := "", len(key)/2+2
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
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
