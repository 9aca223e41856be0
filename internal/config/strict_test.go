package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The configuration names keys dotted, the sandbox spec "where: key"; the
// messages are otherwise the same.
func TestWalkerMessages(t *testing.T) {
	known := []string{"port", "greeting_timeout", "connect_timeout"}
	for _, tc := range []struct {
		dotted      bool
		where, yaml string
		want        string
	}{
		{true, "probe", "port: 1\nport: 2\n", "w.yaml:2: probe.port is set twice (first on line 1)"},
		{false, "smtp 127.0.0.1", "port: 1\nport: 2\n", "w.yaml:2: smtp 127.0.0.1: port is set twice (first on line 1)"},
		{true, "", "port: 1\n\nport: 2\n", "w.yaml:3: port is set twice (first on line 1)"},
		{true, "probe", "prot: 1\n", `w.yaml:1: unknown key "prot" in probe (did you mean "port"? known: port, greeting_timeout, connect_timeout)`},
		{true, "", "x: 1\n", `w.yaml:1: unknown key "x" at the top level (known: port, greeting_timeout, connect_timeout)`},
		{true, "probe", "[port]: 1\n", "w.yaml:1: probe: want a single value as the key, got a list"},
		{true, "", "- port\n", "w.yaml:1: want a mapping (key: value lines), got a list"},
		{false, "zone", "a: 1\nb: [1]\n", "w.yaml:2: zone: b: want a single value, got a list"},
	} {
		root, err := ReadDocument("w.yaml", []byte(tc.yaml), "a test")
		if err != nil {
			t.Fatal(err)
		}
		w := Walker{File: "w.yaml", Dotted: tc.dotted}
		scalar := func(k, v *yaml.Node) error {
			_, err := w.Scalar(v, w.Key(tc.where, k.Value))
			return err
		}
		if tc.where == "zone" { // keys that are names, not known keys
			err = w.Pairs(root, tc.where, scalar)
		} else {
			err = w.Fields(root, tc.where, known, func(_ string, k, v *yaml.Node) error { return scalar(k, v) })
		}
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
}

// Of a long list of keys only the closest is named.
func TestUnknownKeyAmongMany(t *testing.T) {
	many := strings.Fields("milter policy_service metrics api decision_timeout header checks resolver probe")
	if got := hint("resolvr", many); got != ` (did you mean "resolver"?)` {
		t.Errorf("got %q", got)
	}
	if got := hint("zzzzzz", many); got != "" {
		t.Errorf("got %q", got)
	}
}
