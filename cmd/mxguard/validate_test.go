package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/sharedcache"
)

// fakePostconf makes validate run a postconf that prints out and exits
// with status; "" means there is no postconf at all.
func fakePostconf(t *testing.T, out string, status int) {
	t.Helper()
	old := postconfPaths
	t.Cleanup(func() { postconfPaths = old })
	dir := t.TempDir()
	bin := filepath.Join(dir, "postconf")
	postconfPaths = []string{bin}
	if out == "" && status == 0 {
		return
	}
	script := "#!/bin/sh\n[ \"$*\" = \"-x -h milter_command_timeout\" ] || exit 9\n"
	if status == 0 {
		script += "echo '" + out + "'\n"
	} else {
		script += "echo 'postconf: fatal: " + out + "' >&2\nexit " + strconv.Itoa(status) + "\n"
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
	}
	for _, c := range cases {
		fakePostconf(t, c.postconf, map[bool]int{true: 1}[c.failing])
		code, out, errOut, path := validate(t, c.yaml)
		if code != exitPass || !strings.Contains(out, "configuration OK") {
			t.Errorf("%q: exit %d, stdout %q; want 0 and OK", c.yaml, code, out)
		}
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		if errOut == "" {
			lines = nil
		}
		if len(lines) != len(c.want) {
			t.Errorf("%q: %d warning lines, want %d:\n%s", c.yaml, len(lines), len(c.want), errOut)
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(lines[i], "mxguard: warning: "+path) || !strings.Contains(lines[i], w) {
				t.Errorf("%q: warning %q, want %q", c.yaml, lines[i], w)
			}
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
