package config

import (
	"strings"
	"testing"
)

// yaml.v3 names the line of the enclosing block, counted from 0, or none;
// configuration errors must name the line to fix.
func TestSyntaxErrorsNameTheLine(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"probe:\n  port: 25\n bad indent\n", `bad.yaml:3: did not find expected key; check the indentation`},
		{"probe:\n  port: 25\n\tgreeting_timeout: 5s\n", `bad.yaml:3: a tab in the indentation`},
		{"probe:\n\tport: 25\n", `bad.yaml:2: a tab in the indentation`},
		{"\tprobe: {}\n", `bad.yaml:1: a tab in the indentation`},
		{"milter:\n  reply_at: rcpt\nheader:\n  name: \"X-MXGuard\nprobe:\n  port: 25\n", `bad.yaml:4: a quoted value that starts here is never closed`},
		{"header:\n  name: 'X-MXGuard\n", `bad.yaml:2: a quoted value`},
		{"milter:\n  listen: inet:127.0.0.1:8891\n  max_sessions: 10\n    idle_timeout: 5m\n", `bad.yaml:4: mapping values are not allowed`},
		{"header:\n  name: a: b\n", `bad.yaml:2: mapping values are not allowed in this context; check the indentation, or quote`},
		{"probe:\n  allow_networks: [127.0.0.0/8,\nresolver:\n  servers: []\n", `bad.yaml:2: `},
		{"probe:\n  port: 25\nresolver:\n  servers: [1.1.1.1\n  timeout: 2s\n", `bad.yaml:4: did not find expected ',' or ']'`},
		{"probe:\n  port: 25\n  connect_timeout: \"2s\" x\n", `bad.yaml:3: did not find expected key`},
		{"probe:\n  port: 25\n- a\n", `bad.yaml:3: did not find expected key`},
		{"probe:\n  port: 25\n  max_hosts: *nope\n", `bad.yaml:3: unknown anchor 'nope' referenced`},
		{"probe:\n  port: 25\n---\nx: [\n", `bad.yaml:4: `},
		// A list over several lines parses at none of its inner lines; an
		// error after it is still found on its own line, one inside it where
		// it opens.
		{"probe:\n  allow_networks: [\n    127.0.0.0/8,\n    \"::1\",\n  ]\n  port: 25\n bad: 1\n", `bad.yaml:7: did not find expected key`},
		{"probe:\n  allow_networks: [\n    127.0.0.0/8,\n    \"::1\" x,\n  ]\n", `bad.yaml:2: did not find expected ',' or ']' in the [ ] or { } list that starts on this line`},
		{"probe:\n  port: 25\n bad indent", `bad.yaml:3: `}, // no final newline
	}
	for _, c := range cases {
		err := checkSyntax("bad.yaml", []byte(c.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.yaml, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), ": yaml:") || strings.Contains(err.Error(), ": line ") {
			t.Errorf("%q: yaml.v3's own wording leaks: %v", c.yaml, err)
		}
	}
}

func TestSyntaxOKForValidYAML(t *testing.T) {
	for _, s := range []string{"", "\n", "probe:\n  port: 25\n", "probe:\n  allow_networks: [\n    127.0.0.0/8,\n  ]\n", "---\n---\n"} {
		if err := checkSyntax("ok.yaml", []byte(s)); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

// Past its budget the search bisects; it still lands on a line that breaks.
func TestSyntaxErrorInALongFile(t *testing.T) {
	var b strings.Builder
	b.WriteString("policy:\n  allow_domains:\n")
	for i := 0; i < 50000; i++ {
		b.WriteString("    - example.com\n")
	}
	b.WriteString("   bad: [\n")
	err := checkSyntax("big.yaml", []byte(b.String()))
	if err == nil || !strings.HasPrefix(err.Error(), "big.yaml:50003: ") {
		t.Errorf("got %v", err)
	}
}

func FuzzCheckSyntax(f *testing.F) {
	for _, s := range []string{"a: [b", "probe:\n\tport: 1\n", "x: \"y\n", "a:\n b\n  c: d\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkSyntax("fuzz.yaml", b)
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
			t.Fatalf("error without file and line: %v", err)
		}
	})
}

// checkSyntax reports whether data is well-formed YAML, with the error
// Parse gives for it: named by the line to fix ("FILE:LINE: message"), not
// as yaml.v3 does (the enclosing block's line, counted from 0).
func checkSyntax(name string, data []byte) error {
	if err := parseYAML(data); err != nil {
		return syntaxError(name, data, err)
	}
	return nil
}
