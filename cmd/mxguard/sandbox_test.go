package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/config"
)

const exampleSpec = "../../configs/sandbox/example.yaml"

// The sandbox as a test suite in another language uses it: a built binary
// driven by a shell script that waits for its line, checks domains against
// it and stops it.
func TestSandboxScript(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on $PATH: %v", err)
	}
	// Upper bounds for a loaded machine, never reached when things work.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "mxguard")
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, "sh", "testdata/sandbox.sh", bin, exampleSpec)
	// On timeout the script goes with everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "PASS\n") {
		t.Fatalf("testdata/sandbox.sh: %v\n%s", err, out)
	}
}

func TestSandboxSpecErrors(t *testing.T) {
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
		{"config:\n  outbound:\n    ips: [127.0.2.1]\n    ipz: [127.0.2.2]\n", `s.yaml:4: config: unknown key "ipz" in outbound (did you mean "ips"? known: ips, helo, self_check_interval)`},
		{"config: {policy: {on_temperror: reject}}\n", `s.yaml:1: config: policy.on_temperror: "reject"`},
		{"config:\n  cache:\n    min_ttl: 2h\n    max_ttl: 1h\n", "s.yaml:4: config: cache.max_ttl: is below cache.min_ttl"},
		{"zone:\n  x.test: {a: 127.0.0.1}\n\nconfig:\n  probe:\n    greeting_timeout: 5s\n    greeting_timeout: 6s\n", "s.yaml:7: config: probe.greeting_timeout is set twice (first on line 6)"},
		{"zone:\n  x.test: {a: 127.0.0.1}\nconfig:\n  log: {level: info}\n  log: {level: warn}\n", "s.yaml:5: config: log is set twice (first on line 4)"},
		{"config:\n  resolver:\n    servers: [192.0.2.53]\n", "s.yaml:3: config: resolver.servers is the sandbox's own"},
		{"config:\n  probe: {port: 2525}\n", "s.yaml:2: config: probe.port is the sandbox's own"},
	} {
		_, err := parseSandboxSpec("s.yaml", []byte(tc.spec))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spec:\n%s\ngot  %v\nwant %s", tc.spec, err, tc.want)
		}
	}
}

// The generated configuration points at the sandbox, with the defaults for
// tests where the spec's config section is silent and its values where not.
func TestSandboxConfig(t *testing.T) {
	spec, err := loadSandboxSpec(exampleSpec)
	if err != nil {
		t.Fatal(err)
	}
	text, err := spec.mxguardConfig("127.0.0.1:5300", 2525)
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

	spec, err = parseSandboxSpec("s.yaml", []byte("config:\n  probe:\n    greeting_timeout: 12s\n  identity:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if text, err = spec.mxguardConfig("127.0.0.1:5300", 2525); err != nil {
		t.Fatal(err)
	}
	if c, err = config.Parse("generated", text); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if c.Probe.GreetingTimeout.D != 12*time.Second || c.Probe.ConnectTimeout.D != time.Second || len(c.Identity.SkipNetworks) != 0 {
		t.Errorf("the spec's values or the sandbox's defaults are lost:\n%s", text)
	}
}

// What a spec describes is what the servers do.
func TestSandboxServesTheSpec(t *testing.T) {
	long := strings.Repeat("x", 300)
	spec, err := parseSandboxSpec("s.yaml", []byte(`negative_ttl: 30
zone:
  x.test:
    mx: [10 mx.x.test, 20 mx2.x.test]
    txt: [`+long+`]
    ttl: 1h
    fault: {a: servfail}
  mx.x.test: {a: 127.0.11.1, aaaa: "::1"}
  alias.x.test: {cname: mx.x.test}
  127.0.11.1: {ptr: mx.x.test}
  gone.x.test: {fault: refused}
smtp:
  127.0.11.1: accept
  127.0.11.2: closed
  127.0.11.3: {banner: "220-a\r\n220 b\r\n"}
`))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := startSandbox(spec, "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.close()
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg).SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 10 * time.Second}).Exchange(m, sb.dns.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask("x.test.", dns.TypeMX); len(r.Answer) != 2 || r.Answer[0].Header().Ttl != 3600 {
		t.Errorf("MX: %v", r)
	}
	if r := ask("x.test.", dns.TypeTXT); len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != long {
		t.Errorf("TXT: %v", r)
	}
	if r := ask("x.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("A with a fault: %v", r)
	}
	if r := ask("gone.x.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("a name with only a fault: %v", r)
	}
	if r := ask("mx.x.test.", dns.TypeAAAA); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
		t.Errorf("AAAA: %v", r)
	}
	if r := ask("alias.x.test.", dns.TypeA); len(r.Answer) != 2 {
		t.Errorf("CNAME: %v", r)
	}
	if r := ask("1.11.0.127.in-addr.arpa.", dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "mx.x.test." {
		t.Errorf("PTR: %v", r)
	}
	if r := ask("nx.test.", dns.TypeA); r.Rcode != dns.RcodeNameError || r.Ns[0].(*dns.SOA).Minttl != 30 {
		t.Errorf("NXDOMAIN: %v", r)
	}
	greeting := func(ip string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(int(sb.port))), 10*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for ip, want := range map[string]string{"127.0.11.1": "220 mx.sandbox.test", "127.0.11.2": "connection refused", "127.0.11.3": "220-a"} {
		if got := greeting(ip); !strings.Contains(got, want) {
			t.Errorf("%s greets %q, want %q", ip, got, want)
		}
	}
}

func TestSandboxUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "sandbox needs --spec FILE"},
		{[]string{"--spec", exampleSpec, "extra"}, "sandbox takes no arguments"},
		{[]string{"--spec", exampleSpec, "--dns", "192.0.2.1:53"}, "not a loopback address"},
		{[]string{"--spec", exampleSpec, "--dns", "localhost:53"}, `"localhost" is not an IP address`},
		{[]string{"--spec", exampleSpec, "--smtp-port", "0"}, "--smtp-port 0: must be 1-65535"},
		{[]string{"--spec", "testdata/no-such-spec.yaml"}, "cannot read testdata/no-such-spec.yaml"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"sandbox"}, tc.args...), nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.want) || stdout.Len() > 0 {
			t.Errorf("sandbox %q: exit %d, stdout %q, stderr %q; want 64 and %q", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("smtp:\n  192.0.2.25: accept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"sandbox", "--spec", bad}, nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), bad+":2: smtp: 192.0.2.25 is not a loopback address") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

// The complete example of docs/SANDBOX.md is a valid spec.
func TestSandboxDocExample(t *testing.T) {
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
	spec, err := parseSandboxSpec("docs/SANDBOX.md example", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.listeners) != 5 || spec.config == nil {
		t.Errorf("the example has %d MX hosts and config %v", len(spec.listeners), spec.config)
	}
}

// --config-out never overwrites a file: the sandbox removes it on exit.
func TestSandboxConfigOutMustBeNew(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(existing, []byte("# the operator's own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"sandbox", "--spec", exampleSpec, "--config-out", existing}, nil, &stdout, &stderr)
	if code != 1 || stdout.Len() > 0 || !strings.Contains(stderr.String(), "it must not exist") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if data, err := os.ReadFile(existing); err != nil || string(data) != "# the operator's own\n" {
		t.Errorf("the existing file is now %q, %v", data, err)
	}
}

// Nested aliases in the config section cannot blow up: a few lines would
// otherwise expand to 10^9 values.
func TestSandboxSpecAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("config:\n  x0: &a0 [1,1,1,1,1,1,1,1,1,1]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "  x%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	_, err := parseSandboxSpec("s.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:2: config: more than 100000 values") {
		t.Errorf("got %v", err)
	}
}

// Aliases anywhere in a spec share one budget: a list of a thousand
// addresses named by a thousand names would make a million records.
func TestSandboxSpecZoneAliasBomb(t *testing.T) {
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
	_, err := parseSandboxSpec("s.yaml", []byte(b.String()))
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "s.yaml:2: zone: more than 100000 values once the spec's aliases are expanded") {
		t.Errorf("got %v", err)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 64<<20 {
		t.Errorf("reading a %d KB spec allocated %d MiB", b.Len()>>10, allocated>>20)
	}
}
