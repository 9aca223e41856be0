package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/sharedcache"
)

// fakePostconf makes validate run a postconf that prints out for
// milter_command_timeout and exits with status; "" means there is no
// postconf at all.
func fakePostconf(t *testing.T, out string, status int) {
	t.Helper()
	if out == "" && status == 0 {
		fakePostconfScript(t, "")
		return
	}
	script := "#!/bin/sh\n[ \"$*\" = \"-x -h milter_command_timeout\" ] || exit 9\n"
	if status == 0 {
		script += "echo '" + out + "'\n"
	} else {
		script += "echo 'postconf: fatal: " + out + "' >&2\nexit " + strconv.Itoa(status) + "\n"
	}
	fakePostconfScript(t, script)
}

// fakeMainCF makes validate run a postconf that prints, for each
// parameter asked, its value in mainCF ("" for the others).
func fakeMainCF(t *testing.T, mainCF map[string]string) {
	t.Helper()
	script := "#!/bin/sh\n[ \"$1 $2\" = \"-x -h\" ] || exit 9\nshift 2\nfor p in \"$@\"; do\n  case \"$p\" in\n"
	for k, v := range mainCF {
		script += "  " + k + ") printf '%s\\n' '" + strings.ReplaceAll(v, "'", `'\''`) + "' ;;\n"
	}
	fakePostconfScript(t, script+"  *) echo ;;\n  esac\ndone\n")
}

// fakePostconfScript makes validate run script as postconf; "" means
// there is no postconf at all.
func fakePostconfScript(t *testing.T, script string) {
	t.Helper()
	old := postconfPaths
	t.Cleanup(func() { postconfPaths = old })
	bin := filepath.Join(t.TempDir(), "postconf")
	postconfPaths = []string{bin}
	if script == "" {
		return
	}
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func validate(t *testing.T, yaml string) (code int, stdout, stderr, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "", "validate", "--config", path)
	return code, stdout, stderr, path
}

// A valid file that will hurt draws one warning line per setting, naming
// the key and its line, and still validates.
func TestValidateWarns(t *testing.T) {
	cases := []struct {
		postconf string // what postconf prints; "" for no postconf
		failing  bool
		yaml     string
		want     []string // warnings, in order
	}{
		{"", false, "decision_timeout: 20s\n", nil},
		{"30s", false, "probe:\n  port: 25\ndecision_timeout: 30s\n",
			[]string{":3: decision_timeout: 30s is not below Postfix's milter_command_timeout 30s (from postconf): Postfix gives up first"}},
		{"10", false, "decision_timeout: 15s\n", []string{":1: decision_timeout: 15s is not below Postfix's milter_command_timeout 10s (from postconf)"}},
		{"2m", false, "decision_timeout: 90s\n", nil},
		{"", false, "decision_timeout: 45s\n",
			[]string{":1: decision_timeout: 45s is not below Postfix's milter_command_timeout 30s (Postfix's default; postconf not found)"}},
		{"open /etc/postfix/main.cf: No such file or directory", true, "decision_timeout: 30s\n",
			[]string{"30s (Postfix's default; postconf failed: postconf: fatal: open /etc/postfix/main.cf: No such file or directory)"}},
		{"$other", false, "decision_timeout: 30s\n", []string{`30s (Postfix's default; postconf printed "$other")`}},
		{"", false, "milter:\n  listen: inet:0.0.0.0:8891\n",
			[]string{":2: milter.listen: inet:0.0.0.0:8891 listens on every interface, and the milter protocol has no authentication: use 127.0.0.1, ::1 or a unix socket"}},
		{"", false, "milter:\n  listen: inet6:[::]:8891\n", []string{":2: milter.listen: inet6:[::]:8891 listens on every interface"}},
		{"", false, "milter:\n  listen: inet:192.0.2.25:8891\n", []string{":2: milter.listen: inet:192.0.2.25:8891 is not a loopback address"}},
		{"", false, "milter:\n  listen: inet6:[::ffff:192.0.2.25]:8891\n", []string{"is not a loopback address"}},
		{"", false, "metrics:\n  listen: :9891\n", []string{":2: metrics.listen: :9891 listens on every interface, and /metrics has no authentication"}},
		{"", false, "api:\n  listen: 0.0.0.0:9892\n  token: t0ken\n", []string{":2: api.listen: 0.0.0.0:9892 listens on every interface, and the API speaks plain HTTP"}},
		{"", false, "metrics:\n  listen: 0.0.0.0:9891\nmilter:\n  listen: inet:8891@10.1.2.3\ndecision_timeout: 1m\n", []string{
			":5: decision_timeout: 1m0s is not below", ":4: milter.listen: inet:8891@10.1.2.3 is not a loopback address", ":2: metrics.listen: 0.0.0.0:9891 listens on every interface"}},
		{"", false, "milter:\n  listen: inet:127.0.0.2:8891\nmetrics:\n  listen: \"[::1]:9891\"\n", nil},
		{"", false, "milter:\n  listen: inet:localhost:8891\nmetrics:\n  listen: \"\"\n", nil},
		{"", false, "milter:\n  listen: unix:/run/mxguard/milter.sock\n", nil},
		{"", false, "resolver:\n  servers: [192.0.2.53, \"8.8.8.8:53\"]\noutbound:\n  dnsbl_zones: [zen.spamhaus.org, bl.spamcop.net]\n",
			[]string{":4: outbound.dnsbl_zones: zen.spamhaus.org through the public resolver 8.8.8.8:53: Spamhaus refuses such queries (127.255.255.254); use your own resolver, or a DQS key (KEY.zen.dq.spamhaus.net)"}},
		{"", false, "resolver:\n  servers: [\"2606:4700:4700::1111\"]\nchecks:\n  domain_blocklists: [dbl.spamhaus.org]\n",
			[]string{":4: checks.domain_blocklists: dbl.spamhaus.org through the public resolver 2606:4700:4700::1111"}},
		{"", false, "resolver:\n  servers: [1.1.1.1]\nchecks:\n  domain_blocklists: [k3y.dbl.dq.spamhaus.net]\n", nil},
		{"", false, "resolver:\n  servers: [192.0.2.53]\noutbound:\n  dnsbl_zones: [zen.spamhaus.org]\n", nil},
	}
	for _, c := range cases {
		fakePostconf(t, c.postconf, map[bool]int{true: 1}[c.failing])
		validateWarns(t, c.yaml, c.want)
	}
}

// validateWarns validates yaml, which must pass with one warning line per
// want, in order, each naming the file and containing its want.
func validateWarns(t *testing.T, yaml string, want []string) {
	t.Helper()
	code, out, errOut, path := validate(t, yaml)
	if code != exitPass || !strings.Contains(out, "configuration OK") {
		t.Errorf("%q: exit %d, stdout %q; want 0 and OK", yaml, code, out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if errOut == "" {
		lines = nil
	}
	if len(lines) != len(want) {
		t.Errorf("%q: %d warning lines, want %d:\n%s", yaml, len(lines), len(want), errOut)
		return
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], "mxguard: warning: "+path) || !strings.Contains(lines[i], w) {
			t.Errorf("%q: warning %q, want %q", yaml, lines[i], w)
		}
	}
}

// With the policy service on, decision_timeout must be below the timeout
// Postfix gives it: that of its check_policy_service entry, else
// smtpd_policy_service_timeout, else what the shipped snippet sets.
func TestValidateWarnsPolicyTimeout(t *testing.T) {
	const on = "policy_service:\n  listen: inet:127.0.0.1:10040\n"
	shipped := map[string]string{"smtpd_recipient_restrictions": "permit_mynetworks, check_policy_service { inet:127.0.0.1:10040, timeout=10s, default_action=DUNNO }"}
	cases := []struct {
		mainCF map[string]string // nil: no postconf
		yaml   string
		want   []string // warnings, in order
	}{
		{nil, on, []string{": decision_timeout: 20s is not below Postfix's timeout for the policy service, 10s " +
			"(what configs/postfix/policy-service.cf sets; postconf not found): Postfix gives up first and applies its default_action, " +
			"so the mail leaves without a header; set decision_timeout below it, e.g. 8s"}},
		{nil, on + "decision_timeout: 8s\n", nil},
		{shipped, on, []string{": decision_timeout: 20s is not below Postfix's timeout for the policy service, 10s (timeout= of its check_policy_service, from postconf)"}},
		{map[string]string{"smtpd_policy_service_timeout": "100s", "smtpd_recipient_restrictions": "check_policy_service inet:127.0.0.1:10040"}, on, nil},
		{map[string]string{"smtpd_policy_service_timeout": "15s", "smtpd_relay_restrictions": "permit_mynetworks,check_policy_service inet:127.0.0.1:10040"}, on,
			[]string{"20s is not below Postfix's timeout for the policy service, 15s (smtpd_policy_service_timeout, from postconf): Postfix gives up first and applies its default_action, so the mail leaves without a header; set decision_timeout below it, e.g. 12s"}},
		{map[string]string{"smtpd_policy_service_timeout": "100s", "smtpd_recipient_restrictions": "check_policy_service {unix:private/postgrey, timeout=5s}, check_policy_service { inet:127.0.0.1:10040, timeout=30s }"}, on, nil},
		{map[string]string{"smtpd_recipient_restrictions": "check_policy_service { unix:private/mxguard, timeout=10s }"},
			"policy_service:\n  listen: unix:/var/spool/postfix/private/mxguard\n", []string{"20s is not below Postfix's timeout for the policy service, 10s (timeout= of its check_policy_service, from postconf)"}},
		{map[string]string{"smtpd_recipient_restrictions": "check_policy_service inet:127.0.0.1:10041"}, on,
			[]string{"10s (what configs/postfix/policy-service.cf sets; postconf shows no check_policy_service for inet:127.0.0.1:10040)"}},
		{nil, "milter:\n  listen: \"\"\n" + on + "decision_timeout: 45s\n", []string{":5: decision_timeout: 45s is not below Postfix's timeout for the policy service"}},
	}
	for _, c := range cases {
		if c.mainCF == nil {
			fakePostconf(t, "", 0)
		} else {
			c.mainCF["milter_command_timeout"] = "1m"
			fakeMainCF(t, c.mainCF)
		}
		validateWarns(t, c.yaml, c.want)
	}
}

// The timeout validate falls back on is the one the shipped snippet sets.
func TestShippedPolicyTimeout(t *testing.T) {
	snippet, err := os.ReadFile("../../configs/postfix/policy-service.cf")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`check_policy_service \{[^}]*timeout=([0-9]+[smhdw]?)`).FindSubmatch(snippet)
	if m == nil {
		t.Fatal("no check_policy_service with a timeout in the snippet")
	}
	if d, ok := postfixDuration(string(m[1])); !ok || d != shippedPolicyTimeout {
		t.Errorf("the snippet's timeout is %s, validate's fallback %v", m[1], shippedPolicyTimeout)
	}
}

// The OK line names what is served.
func TestValidateNamesWhatIsServed(t *testing.T) {
	fakePostconf(t, "", 0)
	for yaml, want := range map[string]string{
		"": "configuration OK (milter inet:127.0.0.1:8891)\n",
		"milter:\n  listen: \"\"\npolicy_service:\n  listen: inet:127.0.0.1:10040\ndecision_timeout: 8s\n":                 "configuration OK (policy service inet:127.0.0.1:10040)\n",
		"policy_service:\n  listen: unix:/run/mxguard/policy.sock\napi:\n  listen: 127.0.0.1:9892\ndecision_timeout: 8s\n": "configuration OK (milter inet:127.0.0.1:8891, policy service unix:/run/mxguard/policy.sock, check API 127.0.0.1:9892)\n",
	} {
		code, out, errOut, path := validate(t, yaml)
		if code != exitPass || out != path+": "+want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %s", yaml, code, out, errOut, want)
		}
	}
}

// The built-in configuration draws no warning.
func TestValidateBuiltInQuiet(t *testing.T) {
	fakePostconf(t, "", 0)
	code, out, errOut := runCLI(t, "", "validate")
	if code != exitPass || errOut != "" || !strings.Contains(out, "(built-in default): configuration OK") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// YAML syntax errors come as FILE:LINE: message, on the line to fix.
func TestValidateSyntaxErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"probe:\n  port: 25\n bad indent\n", ":3: did not find expected key"},
		{"probe:\n  port: 25\n\tgreeting_timeout: 5s\n", ":3: a tab in the indentation"},
		{"header:\n  name: \"X-MXGuard\nprobe:\n  port: 25\n", ":2: a quoted value that starts here is never closed"},
		{"decision_timeout: 20s\nresolver:\n  servers: [192.0.2.53,\n  timeout: 2s\n", ":3: "},
	} {
		code, _, errOut, path := validate(t, c.yaml)
		if code != exitUsage || !strings.HasPrefix(errOut, "mxguard: "+path+c.want) || strings.Contains(errOut, "yaml: ") {
			t.Errorf("%q: exit %d, stderr %q; want 64 and %s%s", c.yaml, code, errOut, path, c.want)
		}
	}
}

func TestPostfixDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{"30s": 30 * time.Second, "30": 30 * time.Second, "2m": 2 * time.Minute,
		"1h": time.Hour, "1d": 24 * time.Hour, "1w": 7 * 24 * time.Hour} {
		if d, ok := postfixDuration(s); !ok || d != want {
			t.Errorf("%q: %v %v", s, d, ok)
		}
	}
	for _, s := range []string{"", "30ms", "1.5s", "-1s", "s", "$milter_timeout", "99999999999"} {
		if d, ok := postfixDuration(s); ok {
			t.Errorf("%q accepted as %v", s, d)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "", "version")
	if code != exitPass || !strings.HasPrefix(out, "mxguard devel") {
		t.Errorf("exit %d, %q; want mxguard devel... from a test binary", code, out)
	}
}

// validate refuses a cache.shared.url exactly when serve's fleet cache
// would, naming the line, and never shows the password.
func TestValidateSharedURLAsServe(t *testing.T) {
	fakePostconf(t, "", 0)
	for _, c := range []struct {
		url, want string // want: "" when both take it
	}{
		{"redis://:pw@127.0.0.1:6390/1x", `redis: invalid database number: "1x"`},
		{"redis://127.0.0.1:6390/0?dial_timeout=zz", `redis: invalid dial timeout: "zz"`},
		{"redis://:pw@127.0.0.1:6390/0/1", "redis: invalid URL path"},
		{"redis://:pw@127.0.0.1:bad/0", `invalid port ":bad" after host`},
		{"valkey://127.0.0.1:6390/0", `scheme "valkey": want redis://`},
		{"redis://:pw@127.0.0.1:6390/1", ""},
		{"redis://127.0.0.1:6390", ""},
		{"rediss://user:pw@127.0.0.1:6390/0?dial_timeout=2s", ""},
		{"unix:///nonexistent/redis.sock", ""},
		{"unix://:pw@/nonexistent/redis.sock?db=2", ""},
		{"redis://:pw@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002/0", ""},
		{"redis://:pw@127.0.0.1:7000,127.0.0.1:7001/1", "only database 0"},
		{"redis://:pw@127.0.0.1:7000,127.0.0.1:bad/0", `invalid port "bad"`},
		{"redis-sentinel://:pw@127.0.0.1:26379,[::1]:26380/0?master_name=mymaster&sentinel_password=pw2", ""},
		{"redis-sentinel://:pw@127.0.0.1:26379/0", "needs ?master_name=NAME"},
		{"redis://:pw@127.0.0.1:6379/0?master_set=mymaster", "redis-sentinel://"},
	} {
		shared, serveErr := sharedcache.New(c.url, time.Second, slog.New(slog.DiscardHandler))
		if serveErr == nil {
			shared.Close()
		}
		code, _, errOut, path := validate(t, "cache:\n  shared:\n    url: \""+c.url+"\"\n")
		switch {
		case c.want == "" && (code != exitPass || serveErr != nil):
			t.Errorf("%s: validate exit %d %s, serve %v; want both to take it", c.url, code, errOut, serveErr)
		case c.want != "" && (code != exitUsage || serveErr == nil ||
			!strings.HasPrefix(errOut, "mxguard: "+path+":3: cache.shared.url: ") || !strings.Contains(errOut, c.want)):
			t.Errorf("%s: validate exit %d %q, serve %v; want both to refuse it: %s", c.url, code, errOut, serveErr, c.want)
		case strings.Contains(errOut, "pw"):
			t.Errorf("%s: the password is shown: %s", c.url, errOut)
		}
	}
}
