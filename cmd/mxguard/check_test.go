package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// sandboxFlags are the flags of a run against a sandbox; the short timeouts
// and the outbound IPs come from a config file.
func sandboxFlags(t *testing.T, sb *smtptest.Sandbox) []string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	yaml := fmt.Sprintf(`probe:
  connect_timeout: %s
  greeting_timeout: %s
outbound:
  ips: [%s, %s]
%s`, spectest.ConnectTimeout, spectest.GreetingTimeout, spectest.IPOutDual, spectest.IPOutOnly, spectest.DomainBlocklistYAML)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--config", cfg, "--resolver", sb.DNS.Addr, "--probe-port", strconv.Itoa(int(sb.Port)),
		"--allow-net", "127.0.0.0/8", "--allow-net", "::1/128"}
}

type reportLine struct {
	Domain    string          `json:"domain"`
	Verdict   string          `json:"verdict"`
	Checks    []policy.Result `json:"checks"`
	ElapsedMS *int64          `json:"elapsed_ms"`
}

func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func parseLines(t *testing.T, out string) []reportLine {
	t.Helper()
	var lines []reportLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r reportLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		if r.ElapsedMS == nil {
			t.Fatalf("no elapsed_ms in %q", l)
		}
		lines = append(lines, r)
	}
	return lines
}

// expectedExit is the exit status for a case (README, mxguard check).
func expectedExit(c spectest.Case) int {
	switch c.Verdict {
	case "flag", "hold":
		return exitFlag
	case "defer", "reject":
		return exitDefer
	}
	if strings.Contains(c.Expected(), "temperror") {
		return exitTempError
	}
	return exitPass
}

func TestCheckTable(t *testing.T) {
	sb := spectest.Sandbox(t)
	flags := sandboxFlags(t, sb)
	for _, c := range spectest.Cases {
		if c.ClientName != "" {
			continue // an MTA-confirmed name exists only inside a milter session
		}
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"check", "--json"}, flags...)
			if c.ClientIP != "" {
				args = append(args, "--client-ip", c.ClientIP)
			}
			if c.HELO != "" {
				args = append(args, "--helo", c.HELO)
			}
			code, out, errOut := runCLI(t, "", append(args, c.Sender)...)
			lines := parseLines(t, out)
			if len(lines) != 1 {
				t.Fatalf("%d report lines; stderr %s", len(lines), errOut)
			}
			r := lines[0]
			if got, want := spectest.Findings(r.Checks), c.Expected(); got != want {
				t.Errorf("statuses\n got %s\nwant %s", got, want)
			}
			if r.Verdict != c.Verdict {
				t.Errorf("verdict %s, want %s", r.Verdict, c.Verdict)
			}
			if want := expectedExit(c); code != want {
				t.Errorf("exit %d, want %d", code, want)
			}
		})
	}
}

func TestCheckJSONShape(t *testing.T) {
	sb := spectest.Sandbox(t)
	code, out, _ := runCLI(t, "", append([]string{"check", "--json", "--client-ip", "127.0.3.1", "--helo", "other.good.test",
		"user@Some-Refused.TEST."}, sandboxFlags(t, sb)...)...)
	if code != exitFlag {
		t.Errorf("exit %d", code)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	if raw["domain"] != "some-refused.test" || raw["verdict"] != "flag" {
		t.Errorf("domain %v verdict %v", raw["domain"], raw["verdict"])
	}
	checks := raw["checks"].([]any)
	want := 0 // every check but those of a message, which a domain has not
	for _, id := range policy.CheckIDs() {
		if !id.AboutMessage() {
			want++
		}
	}
	if len(checks) != want {
		t.Fatalf("%d checks, want %d", len(checks), want)
	}
	port25 := checks[3].(map[string]any)
	for key, want := range map[string]string{"id": "mx.port25", "status": "warn", "host": "mx.refused.test", "ip": spectest.IPRefused} {
		if port25[key] != want {
			t.Errorf("mx.port25 %s = %v, want %s", key, port25[key], want)
		}
	}
	if len(port25) != 5 {
		t.Errorf("check object has keys %v, want id, status, detail, host, ip", port25)
	}
}

func TestCheckBatchServesRepeatsFromCache(t *testing.T) {
	sb := spectest.Sandbox(t)
	flags := sandboxFlags(t, sb)
	args := append([]string{"check", "--json", "--client-ip", "127.0.3.1", "--helo", "mail.good.test", "--file", "-"}, flags...)

	code, out, _ := runCLI(t, "ok.test\n", args...)
	if code != exitPass || len(parseLines(t, out)) != 1 {
		t.Fatalf("single run: exit %d, %s", code, out)
	}
	once := sb.DNS.Queries()
	if once == 0 {
		t.Fatal("no DNS queries counted")
	}
	sb.DNS.ResetCounts()

	input := "# audit list\nok.test\n\nuser@ok.test\nOK.test.\n"
	code, out, _ = runCLI(t, input, args...)
	lines := parseLines(t, out)
	if code != exitPass || len(lines) != 3 {
		t.Fatalf("batch: exit %d, %d lines", code, len(lines))
	}
	if got := sb.DNS.Queries(); got != once {
		t.Errorf("three evaluations of one domain made %d DNS queries; one makes %d", got, once)
	}
	for _, l := range lines {
		if l.Domain != "ok.test" || spectest.Findings(l.Checks) != "" {
			t.Errorf("line %+v", l)
		}
	}
}

func TestCheckBatchKeepsInputOrder(t *testing.T) {
	sb := spectest.Sandbox(t)
	domains := []string{"silent.test", "ok.test", "nx.test", "refused.test", "implicit.test", "v4.test", "554.test"}
	args := append([]string{"check", "--json", "--concurrency", "4", "--file", "-"}, sandboxFlags(t, sb)...)
	code, out, _ := runCLI(t, strings.Join(domains, "\n"), args...)
	if code != exitDefer {
		t.Errorf("exit %d, want the worst (2)", code)
	}
	lines := parseLines(t, out)
	for i, l := range lines {
		if l.Domain != domains[i] {
			t.Errorf("line %d is %s, want %s", i, l.Domain, domains[i])
		}
	}
}

func TestCheckHumanReport(t *testing.T) {
	sb := spectest.Sandbox(t)
	code, out, _ := runCLI(t, "", append([]string{"check", "a@refused.test", "ok.test"}, sandboxFlags(t, sb)...)...)
	if code != exitDefer {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{
		"refused.test: DEFER", "CHECK", "STATUS", "DETAIL",
		"mx.port25         fail", "mx.refused.test", "MTA reply: 451 4.7.1 refused.test: mx.port25 fail",
		"What to fix:", fmt.Sprintf("- mx.port25 (fail): Make every MX host accept SMTP on port %d", sb.Port),
		"ok.test: PASS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("human report lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("probe:\n  port: 25\n  greting_timeout: 5s\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"check"}, "name domains or addresses, or --file"},
		{[]string{"check", "--file", "x", "example.com"}, "but not both"},
		{[]string{"check", "--client-ip", "300.1.1.1", "example.com"}, `--client-ip "300.1.1.1" is not an IP address`},
		{[]string{"check", "--allow-net", "10.0.0.0/33", "example.com"}, "--allow-net"},
		{[]string{"check", "--probe-port", "99999", "example.com"}, "--probe-port 99999"},
		{[]string{"check", "--concurrency", "0", "--file", "-"}, "--concurrency must be at least 1"},
		{[]string{"check", "--config", bad, "example.com"}, bad + `:3: unknown key "greting_timeout" in probe (did you mean "greeting_timeout"?)`},
		{[]string{"check", "--config", "/nonexistent.yaml", "example.com"}, "/nonexistent.yaml"},
		{[]string{"check", "--file", "/nonexistent.txt"}, "/nonexistent.txt"},
		{[]string{"check", "--bogus", "example.com"}, "flag provided but not defined: -bogus"},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, "", c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 64 and %q", c.args, code, errOut, c.want)
		}
	}
}

func TestWorseOrdersExitCodes(t *testing.T) {
	for _, c := range []struct{ a, b, want int }{
		{exitPass, exitTempError, exitTempError},
		{exitTempError, exitFlag, exitFlag},
		{exitDefer, exitFlag, exitDefer},
		{exitFlag, exitPass, exitFlag},
	} {
		if got := worse(c.a, c.b); got != c.want {
			t.Errorf("worse(%d, %d) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// headlineExit is the exit status each headline word stands for.
var headlineExit = map[string]int{"PASS": exitPass, "FLAG": exitFlag, "HOLD": exitFlag,
	"DEFER": exitDefer, "REJECT": exitDefer, "TEMPERROR": exitTempError}

// headline returns the word after "DOMAIN: " on a report's first line.
func headline(t *testing.T, out string) string {
	t.Helper()
	first, _, _ := strings.Cut(out, "\n")
	_, rest, ok := strings.Cut(first, ": ")
	if !ok {
		t.Fatalf("no headline in %q", out)
	}
	word, _, _ := strings.Cut(rest, " ")
	return word
}

// The human headline says what the exit status says, for every case of the
// check table: a report that could check nothing is TEMPERROR, not PASS.
func TestCheckHeadlineAgreesWithExitCode(t *testing.T) {
	sb := spectest.Sandbox(t)
	flags := sandboxFlags(t, sb)
	for _, c := range spectest.Cases {
		if c.ClientName != "" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"check"}, flags...)
			if c.ClientIP != "" {
				args = append(args, "--client-ip", c.ClientIP)
			}
			if c.HELO != "" {
				args = append(args, "--helo", c.HELO)
			}
			code, out, errOut := runCLI(t, "", append(args, c.Sender)...)
			word := headline(t, out)
			if want, ok := headlineExit[word]; !ok || want != code {
				t.Errorf("headline %q with exit %d; stderr %s\n%s", word, code, errOut, out)
			}
		})
	}
}

// Only temporary errors: TEMPERROR and 3, also when on_temperror makes
// serve defer such mail; the report says that too.
func TestCheckTempErrorOnlyHeadline(t *testing.T) {
	sb := spectest.Sandbox(t)
	flags := sandboxFlags(t, sb)
	deferCfg := filepath.Join(t.TempDir(), "defer.yaml")
	os.WriteFile(deferCfg, []byte("policy:\n  on_temperror: defer\n"), 0o644)
	for _, extra := range [][]string{nil, {"--config", deferCfg}} {
		code, out, _ := runCLI(t, "", append(append(append([]string{"check"}, flags...), extra...), "servfail.test")...)
		if code != exitTempError || headline(t, out) != "TEMPERROR" {
			t.Errorf("%v: exit %d, headline %q, want 3 and TEMPERROR:\n%s", extra, code, headline(t, out), out)
		}
		if extra != nil && !strings.Contains(out, "serve would defer: policy.on_temperror is defer") {
			t.Errorf("the report does not say that serve would defer:\n%s", out)
		}
		if strings.Contains(out, "PASS") {
			t.Errorf("%v: PASS in the report of a domain that could not be checked:\n%s", extra, out)
		}
	}
}

// A finding beside a temporary error: the finding's headline and status,
// even where on_temperror makes the verdict stronger.
func TestOutcomeWithTempErrors(t *testing.T) {
	results := func(statuses ...policy.Status) []policy.Result {
		var rs []policy.Result
		for i, st := range statuses {
			rs = append(rs, policy.Result{ID: policy.CheckIDs()[i], Status: st})
		}
		return rs
	}
	P, W, F, T, S := policy.StatusPass, policy.StatusWarn, policy.StatusFail, policy.StatusTempError, policy.StatusSkip
	cases := []struct {
		onTemp policy.Verdict
		checks []policy.Result
		word   string
		code   int
		note   bool // "serve would defer"
	}{
		{policy.Pass, results(P, P, P, P, P), "PASS", exitPass, false},
		{policy.Pass, results(P, T, S, S, S), "TEMPERROR", exitTempError, false},
		{policy.Defer, results(P, T, S, S, S), "TEMPERROR", exitTempError, true},
		{policy.Pass, results(P, P, W, T, P), "FLAG", exitFlag, false},
		{policy.Defer, results(P, P, W, T, P), "FLAG", exitFlag, true},
		{policy.Defer, results(P, P, P, F, T), "DEFER", exitDefer, false},
	}
	for _, c := range cases {
		cfg := config.Default().Engine()
		cfg.Policy.OnTempError = c.onTemp
		engine, err := policy.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := &policy.Report{Domain: "example.com", Checks: c.checks}
		r.Decision = cfg.Policy.Decide(r.Domain, r.ClientIP, r.Checks)
		word, code := outcome(engine, r)
		if word != c.word || code != c.code {
			t.Errorf("on_temperror %v, %s: %s %d, want %s %d", c.onTemp, spectest.Findings(c.checks), word, code, c.word, c.code)
		}
		var out bytes.Buffer
		writeHuman(&out, r, word)
		if got := headline(t, out.String()); got != c.word {
			t.Errorf("printed headline %q, want %q", got, c.word)
		}
		if strings.Contains(out.String(), "serve would defer") != c.note {
			t.Errorf("verdict %s, headline %s, report:\n%s", r.Verdict(), word, out.String())
		}
	}
}

// Each flag takes what its configuration key takes, with the same words,
// and no Go internals.
func TestCheckFlagsValidatedLikeConfigKeys(t *testing.T) {
	cases := []struct {
		flag, value, yaml, want string
	}{
		{"--resolver", "dns.google", "resolver:\n  servers: [%q]\n", `"dns.google" is not an IP address or IP:port`},
		{"--resolver", "192.0.2.53:0", "resolver:\n  servers: [%q]\n", `"192.0.2.53:0" is not an IP address or IP:port`},
		{"--resolver", "192.0.2.53:http", "resolver:\n  servers: [%q]\n", `is not an IP address or IP:port`},
		{"--resolver", "", "resolver:\n  servers: [%q]\n", `"" is not an IP address or IP:port`},
		{"--probe-port", "0", "probe:\n  port: %s\n", `must be 1-65535`},
		{"--allow-net", "10.0.0.0/33", "probe:\n  allow_networks: [%q]\n", `"10.0.0.0/33" is not a network in CIDR notation`},
		{"--allow-net", "10.0.0.1/8", "probe:\n  allow_networks: [%q]\n", `"10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`},
		{"--allow-net", "::ffff:0:0/80", "probe:\n  allow_networks: [%q]\n", `"::ffff:0:0/80" mixes IPv4-mapped and other IPv6 addresses`},
		{"--allow-net", "localhost", "probe:\n  allow_networks: [%q]\n", `"localhost" is not an IP address or network`},
		{"--outbound-ip", "192.0.2.7/24", "outbound:\n  ips: [%q]\n", `"192.0.2.7/24" has host bits set; did you mean 192.0.2.0/24?`},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, "", "check", c.flag, c.value, "example.com")
		if code != exitUsage || !strings.Contains(errOut, c.flag+" ") || !strings.Contains(errOut, c.want) {
			t.Errorf("%s %q: exit %d, stderr %q; want 64, the flag and %q", c.flag, c.value, code, errOut, c.want)
		}
		_, err := config.Parse("c.yaml", []byte(fmt.Sprintf(c.yaml, c.value)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("the configuration key says %v, the flag %q", err, c.want)
		}
	}
	for _, args := range [][]string{
		{"--probe-port", "-1"}, {"--probe-port", "65536"}, {"--probe-port", "abc"}, {"--probe-port", ""},
		{"--probe-port", "99999999999999999999"}, {"--client-ip", ""}, {"--client-ip", "fe80::1%eth0"},
		{"--allow-net", "10.0.0.0/-1"}, {"--allow-net", "fe80::%eth0/64"}, {"--allow-net", "fe80::1%eth0"},
		{"--resolver", "[::1]"}, {"--resolver", "192.0.2.53:99999"},
	} {
		code, _, errOut := runCLI(t, "", append(append([]string{"check"}, args...), "example.com")...)
		if code != exitUsage || !strings.HasPrefix(errOut, "mxguard: "+args[0]+" ") {
			t.Errorf("%q: exit %d, stderr %q; want 64 and a message about %s", args, code, errOut, args[0])
		}
		for _, internal := range []string{"netip", "strconv", "Parse", "Atoi", "parse error", "invalid syntax", "out of range"} {
			if strings.Contains(errOut, internal) {
				t.Errorf("%q: stderr %q shows Go internals (%s)", args, errOut, internal)
			}
		}
	}
}

// IPv4-mapped networks and clients become IPv4, as in the configuration.
func TestCheckFlagsUnmapIPv4(t *testing.T) {
	o := checkOptions{allowNets: listFlag{"::ffff:10.0.0.0/104", "::ffff:192.0.2.7"}, outbound: listFlag{"::ffff:198.51.100.0/120"},
		clientIP: "::ffff:127.0.3.1", probePort: "2525", set: map[string]bool{"client-ip": true, "probe-port": true}}
	cfg, client, err := o.engineConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
	if got := cfg.Probe.AllowNetworks[len(cfg.Probe.AllowNetworks)-2:]; !reflect.DeepEqual(got, want) {
		t.Errorf("allow networks %v, want %v", got, want)
	}
	if got := cfg.OutboundIPs[len(cfg.OutboundIPs)-1]; got != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("outbound %v", got)
	}
	if client != netip.MustParseAddr("127.0.3.1") || cfg.Probe.Port != 2525 {
		t.Errorf("client %v, port %d", client, cfg.Probe.Port)
	}
	c, err := config.Parse("c.yaml", []byte("probe:\n  allow_networks: [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.7\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Engine().Probe.AllowNetworks; !reflect.DeepEqual(got, want) {
		t.Errorf("the configuration gives %v, the flags %v", got, want)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Whatever a message quotes, check and validate print ASCII.
func TestMessagesAreASCII(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "clé.yaml")
	os.WriteFile(badKey, []byte("probe:\n  pört: 25\nheader:\n  name: \"X-Mé\"\n"), 0o644)
	badValue := filepath.Join(dir, "value.yaml")
	os.WriteFile(badValue, []byte("header:\n  name: \"X-Mé\"\n"), 0o644)
	for _, args := range [][]string{
		{"check", "--bögus", "example.com"},
		{"check", "--allow-net", "10.0.0.0/8\u2014", "example.com"},
		{"check", "--client-ip", "192.0.2.1\u00a0", "example.com"},
		{"check", "--config", badKey, "example.com"},
		{"validate", "--config", badKey},
		{"validate", "--config", badValue},
		{"validate", "--config", filepath.Join(dir, "nicht-da-ä.yaml")},
		{"frobnicäte"},
	} {
		code, out, errOut := runCLI(t, "", args...)
		if code != exitUsage || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
		if !isASCII(out) || !isASCII(errOut) {
			t.Errorf("%q: not ASCII:\n%s%s", args, out, errOut)
		}
	}
}

// Text from the network (a PTR name, a greeting) and typography in check
// texts: ASCII in the table, control characters escaped.
func TestHumanReportIsASCII(t *testing.T) {
	r := &policy.Report{Domain: "example.com", Checks: []policy.Result{
		{ID: policy.MXRecords, Status: policy.StatusWarn, Detail: "implicit MX (RFC 5321 \u00a75.1) \u2026 \u2014 caf\u00e9 \U0001F600"},
		{ID: policy.ClientPTR, Status: policy.StatusPass, Host: "evil\x1b[31m\tname\xff", Detail: "line\nbreak"},
	}}
	var out bytes.Buffer
	writeHuman(&out, r, "FLAG")
	s := out.String()
	if !isASCII(s) {
		t.Errorf("not ASCII:\n%s", s)
	}
	for _, want := range []string{`RFC 5321 section 5.1`, `...`, `--`, `caf\u00e9`, `\ud83d\ude00`, `evil\x1b[31m\x09name\xff`, `line\x0abreak`} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if strings.ContainsAny(s, "\x1b\r") || strings.Count(s, "\n") != 4 {
		t.Errorf("control characters or extra lines:\n%q", s)
	}
}

// JSON lines are ASCII too, with escapes that decode to the same values.
func TestASCIIWriterKeepsJSONValues(t *testing.T) {
	want := map[string]string{"detail": "RFC 5321 \u00a75.1 \u2026 caf\u00e9 \U0001F600 <&>", "ctl": "a\x01\tb"}
	var buf bytes.Buffer
	if err := json.NewEncoder(asciiWriter{&buf}).Encode(want); err != nil {
		t.Fatal(err)
	}
	if !isASCII(buf.String()) {
		t.Fatalf("not ASCII: %s", buf.String())
	}
	var got map[string]string
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %q (%v), want %q; line %s", got, err, want, buf.String())
	}
}

// Under policy.mode: report, check reports what enforcement would do and
// says that serve would enforce none of it.
func TestCheckReportMode(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := filepath.Join(t.TempDir(), "report.yaml")
	if err := os.WriteFile(cfg, []byte("policy:\n  mode: report\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--config", cfg, "--resolver", sb.DNS.Addr, "--probe-port", strconv.Itoa(int(sb.Port)), "--allow-net", "127.0.0.0/8"}
	code, out, _ := runCLI(t, "", append([]string{"check", "--json"}, append(flags, "refused.test")...)...)
	var line struct{ Verdict, Mode string }
	if err := json.Unmarshal([]byte(out), &line); err != nil || code != exitDefer || line.Verdict != "defer" || line.Mode != "report" {
		t.Errorf("JSON: exit %d, %q (%v)", code, out, err)
	}
	_, out, _ = runCLI(t, "", append([]string{"check"}, append(flags, "refused.test")...)...)
	if !strings.Contains(out, "policy.mode: report") {
		t.Errorf("human output does not name the mode:\n%s", out)
	}
}
