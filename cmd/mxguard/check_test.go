package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// sandboxFlags are the flags of the example run against a sandbox;
// the short timeouts and the outbound IPs come from a config file.
func sandboxFlags(t *testing.T, sb *smtptest.Sandbox) []string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	yaml := fmt.Sprintf(`probe:
  connect_timeout: %s
  greeting_timeout: %s
outbound:
  ips: [%s, %s]
`, spectest.ConnectTimeout, spectest.GreetingTimeout, spectest.IPOutDual, spectest.IPOutOnly)
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

// expectedExit is the SPEC exit status for a case.
func expectedExit(c spectest.Case) int {
	switch c.Verdict {
	case "flag", "hold":
		return exitFlag
	case "defer", "reject":
		return exitDefer
	}
	if strings.Contains(c.Want, "temperror") {
		return exitTempError
	}
	return exitPass
}

func TestCheckSPECTable(t *testing.T) {
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
			if got := spectest.Statuses(r.Checks); got != c.Want {
				t.Errorf("statuses\n got %s\nwant %s", got, c.Want)
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
	if len(checks) != 9 {
		t.Fatalf("%d checks", len(checks))
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
		if l.Domain != "ok.test" || spectest.Statuses(l.Checks) != "pass pass pass pass pass / pass pass pass pass" {
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
		"What to fix:", "- mx.port25 (fail): Make every MX host accept SMTP on port 25",
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
