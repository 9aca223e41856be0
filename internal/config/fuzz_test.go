package config

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/configs"
)

// A configuration file is operator input: any bytes must give a
// configuration or an error that names the file, never a panic.
func FuzzParse(f *testing.F) {
	f.Add(configs.Default)
	for _, s := range []string{"", "probe:\n  port: 2525\n", "policy:\n  actions:\n    mx.port25: flag\n", "a: [b", "---\n---\n",
		"probe: &x {port: 1}\nresolver: *x\n", "resolver:\n  servers: [\"1.2.3.4:99999\"]\n", "milter:\n  listen: unix:\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		if c.Engine().Probe.Port == 0 || c.DecisionTimeout.D <= 0 || c.Milter.Listen.Network == "" {
			t.Fatalf("accepted an unusable configuration: %+v", c)
		}
	})
}
