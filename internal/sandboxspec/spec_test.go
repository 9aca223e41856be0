package sandboxspec

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
)

const exampleSpec = "../../configs/sandbox/example.yaml"

func TestSpecErrors(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"zones: {}\n", `s.yaml:1: unknown key "zones" at the top level (did you mean "zone"? known: negative_ttl, zone, smtp, config)`},
		{"", "s.yaml: the spec is empty"},
		{"zone: {}\n---\nsmtp: {}\n", "s.yaml:2: a second YAML document"},
		{"zone:\n  ok.test:\n    a: [127.0.0.1\nsmtp: {}\n", "s.yaml:3: did not find expected ',' or ']'"},
		{"zone:\n  ok.test:\n    tx: x\n", `s.yaml:3: unknown key "tx" in zone ok.test (did you mean "txt"? known: ttl, a, aaaa, mx, cname, ptr, txt, fault)`},
		{"zone:\n  ok.test:\n", "s.yaml:2: zone ok.test: has no records"},
		{"zone:\n  ok.test: {ttl: 60}\n", "s.yaml:2: zone ok.test: has no records and no fault"},
		{"zone:\n  ok.test: {a: 127.0.0.1}\n  OK.Test.: {a: 127.0.0.2}\n", "s.yaml:3: zone: OK.Test. names ok.test again (first on line 2)"},
		{"zone:\n  ok.test:\n    a: 127.0.0.1\n    a: 127.0.0.2\n", "s.yaml:4: zone ok.test: a is set twice (first on line 3)"},
		{"zone:\n  bad name.test: {a: 127.0.0.1}\n", `s.yaml:2: zone: "bad name.test" is not a domain name`},
		{"zone:\n  x.test:\n    mx: [10 mx.x.test, 10mx.x.test]\n", `s.yaml:3: zone x.test: mx: "10mx.x.test": want PREFERENCE HOST`},
		{"zone:\n  x.test:\n    mx: 70000 mx.x.test\n", "s.yaml:3: zone x.test: mx: \"70000 mx.x.test\": the preference must be a number from 0 to 65535"},
		{"zone:\n  x.test:\n    a:\n      - 127.0.0.1\n      - ::1\n", "s.yaml:5: zone x.test: a: ::1 is not an IPv4 address; IPv6 addresses go under aaaa"},
		{"zone:\n  x.test: {aaaa: 127.0.0.1}\n", "s.yaml:2: zone x.test: aaaa: 127.0.0.1 is not an IPv6 address"},
		{"zone:\n  x.test:\n    cname: y.test\n    txt: hi\n", "s.yaml:4: zone x.test: a name with a CNAME has no other records"},
		{"zone:\n  x.test:\n    cname: [y.test, z.test]\n", "s.yaml:3: zone x.test: cname: a name has one CNAME"},
		{"zone:\n  x.test: {a: 127.0.0.1, ttl: 1.5s}\n", `s.yaml:2: zone x.test: ttl: "1.5s" is not a TTL`},
		{"zone:\n  127.0.0.1: {a: 127.0.0.1}\n", `s.yaml:2: unknown key "a" in zone 127.0.0.1 (1.0.0.127.in-addr.arpa) (known: ttl, ptr, fault)`},
		{"zone:\n  x.test: {fault: slow}\n", `s.yaml:2: zone x.test: fault: "slow" is not a fault`},
		{"zone:\n  x.test:\n    fault: delay 2\n", `s.yaml:3: zone x.test: fault: "2" is not a duration`},
		{"zone:\n  x.test:\n    fault: {soa: drop}\n", `s.yaml:3: unknown key "soa" in zone x.test: fault`},
		{"negative_ttl: -5\n", `s.yaml:1: negative_ttl: "-5" is not a TTL`},
		{"smtp:\n  10.0.0.1: accept\n", "s.yaml:2: smtp: 10.0.0.1 is not a loopback address; the sandbox listens on loopback only"},
		{"smtp:\n  mx.test: accept\n", `s.yaml:2: smtp: "mx.test" is not an IP address`},
		{"smtp:\n  127.0.11.1: accept\n  127.0.11.1: silent\n", "s.yaml:3: smtp: 127.0.11.1 is listed twice (first on line 2)"},
		{"smtp:\n  ::1: accept\n  0::1: silent\n", "s.yaml:3: smtp: ::1 is listed twice (first on line 2)"},
		{"smtp:\n  127.0.11.1: greet\n", `s.yaml:2: smtp 127.0.11.1: "greet" is not a behaviour`},
		{"smtp:\n  127.0.11.1: slow_greeting\n", `s.yaml:2: smtp 127.0.11.1: "slow_greeting" is not a behaviour`},
		{"smtp:\n  127.0.11.1: slow_greeting soon\n", `s.yaml:2: smtp 127.0.11.1: "soon" is not a duration`},
		{"smtp:\n  ::1: blackhole\n", "s.yaml:2: smtp ::1: blackhole needs an IPv4 address"},
		{"smtp:\n  127.0.11.1:\n    banner: hi\n    interval: 1s\n", "s.yaml:3: smtp 127.0.11.1: want banner: TEXT"},
		{"smtp:\n  127.0.11.1:\n    banner: hi\n    dleay: 1s\n", `s.yaml:4: unknown key "dleay" in smtp 127.0.11.1`},
		{"config: 5\n", "s.yaml:1: config: want a mapping of mxguard configuration keys"},
		// The config section is checked by the configuration loader, on the spec's lines.
		{"zone:\n  x.test: {a: 127.0.0.1}\nconfig:\n  probe:\n    greeting_timeout: 5\n", `s.yaml:5: config: probe.greeting_timeout: "5" is not a duration`},
		{"config:\n  outbound:\n    ips: [127.0.2.1]\n    ipz: [127.0.2.2]\n", `s.yaml:4: config: unknown key "ipz" in outbound (did you mean "ips"? known: ips, helo, self_check_interval, dnsbl_zones)`},
		{"config: {policy: {on_temperror: reject}}\n", `s.yaml:1: config: policy.on_temperror: "reject"`},
		{"config:\n  cache:\n    min_ttl: 2h\n    max_ttl: 1h\n", "s.yaml:4: config: cache.max_ttl: is below cache.min_ttl"},
		{"zone:\n  x.test: {a: 127.0.0.1}\n\nconfig:\n  probe:\n    greeting_timeout: 5s\n    greeting_timeout: 6s\n", "s.yaml:7: config: probe.greeting_timeout is set twice (first on line 6)"},
		{"zone:\n  x.test: {a: 127.0.0.1}\nconfig:\n  log: {level: info}\n  log: {level: warn}\n", "s.yaml:5: config: log is set twice (first on line 4)"},
		{"\nconfig:\n  policy:\n    actions:\n      mx.port25: flag\n      mx.port25: defer\n", `s.yaml:6: config: policy.actions: check "mx.port25" is listed twice (first on line 5)`},
		{"config:\n  resolver:\n    servers: [192.0.2.53]\n", "s.yaml:3: config: resolver.servers is the sandbox's own"},
		{"config:\n  probe: {port: 2525}\n", "s.yaml:2: config: probe.port is the sandbox's own"},
	} {
		_, err := Parse("s.yaml", []byte(tc.spec))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spec:\n%s\ngot  %v\nwant %s", tc.spec, err, tc.want)
		}
	}
}

// The generated configuration points at the sandbox, with the defaults for
// tests where the spec's config section is silent and its values where not.
func TestConfig(t *testing.T) {
	spec, err := Load(exampleSpec)
	if err != nil {
		t.Fatal(err)
	}
	text, err := spec.Config("127.0.0.1:5300", 2525)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("generated", text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !slices.Equal(c.Resolver.Servers, []string{"127.0.0.1:5300"}) || c.Probe.Port != 2525 || len(c.Identity.SkipNetworks) != 0 ||
		len(c.Probe.AllowNetworks) != 2 || c.Probe.GreetingTimeout.D != 2*time.Second || c.Metrics.Listen != "" ||
		len(c.Outbound.IPs) != 1 || c.Outbound.IPs[0].P.String() != "127.0.2.1/32" || c.Outbound.HELO != "relay.sandbox.test" {
		t.Errorf("generated configuration:\n%s", text)
	}

	spec, err = Parse("s.yaml", []byte("config:\n  probe:\n    greeting_timeout: 12s\n  identity:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if text, err = spec.Config("127.0.0.1:5300", 2525); err != nil {
		t.Fatal(err)
	}
	if c, err = config.Parse("generated", text); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if c.Probe.GreetingTimeout.D != 12*time.Second || c.Probe.ConnectTimeout.D != time.Second || len(c.Identity.SkipNetworks) != 0 {
		t.Errorf("the spec's values or the sandbox's defaults are lost:\n%s", text)
	}
}

// The complete example of docs/SANDBOX.md is a valid spec.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/SANDBOX.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "### A complete example")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	example, _, ok3 := strings.Cut(rest, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/SANDBOX.md has no complete example")
	}
	spec, err := Parse("docs/SANDBOX.md example", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Listeners) != 5 || spec.config == nil {
		t.Errorf("the example has %d MX hosts and config %v", len(spec.Listeners), spec.config)
	}
}

// Nested aliases in the config section cannot blow up: a few lines would
// otherwise expand to 10^9 values.
func TestConfigAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("config:\n  x0: &a0 [1,1,1,1,1,1,1,1,1,1]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "  x%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	_, err := Parse("s.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:2: config: more than 100000 values") {
		t.Errorf("got %v", err)
	}
}

// Aliases anywhere in a spec share one budget: a list of a thousand
// addresses named by a thousand names would make a million records.
func TestZoneAliasBomb(t *testing.T) {
	var b strings.Builder
	addrs := make([]string, 1000)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.%d.%d", i/250, i%250+1)
	}
	fmt.Fprintf(&b, "zone:\n  big.test:\n    a: &big [%s]\n", strings.Join(addrs, ", "))
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "  n%d.test: {a: *big}\n", i)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Parse("s.yaml", []byte(b.String()))
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "s.yaml:2: zone: more than 100000 values once the spec's aliases are expanded") {
		t.Errorf("got %v", err)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 64<<20 {
		t.Errorf("reading a %d KB spec allocated %d MiB", b.Len()>>10, allocated>>20)
	}
}
