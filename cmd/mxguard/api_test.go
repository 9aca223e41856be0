package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/spectest"
)

// apiGet asks the check API with the bearer token.
func apiGet(t *testing.T, u, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The API answers every SPEC case as `mxguard check --json` does with the
// same configuration: the same report, and so nothing probed or looked up
// that the CLI would not.
func TestAPIAnswersAsTheCLIDoes(t *testing.T) {
	sb := spectest.Sandbox(t)
	dir := t.TempDir()
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	apiBase := fmt.Sprintf("http://127.0.0.1:%d", freeTCPPort(t))
	metricsPort := freeTCPPort(t)
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	writeFile(t, cfgPath, sandboxConfig(sb, "inet:"+milterAddr, metricsPort, fmt.Sprintf(`api:
  listen: %s
  token: s3cret
  rate: 1000
  max_concurrency: 200
`, strings.TrimPrefix(apiBase, "http://"))))
	d := startDaemon(t, cfgPath, "tcp", milterAddr)
	d.waitLog(t, "mxguard serving")

	if code, body := apiGet(t, apiBase+"/v1/check?domain=ok.test", ""); code != 401 {
		t.Errorf("without the token: %d %s", code, body)
	}
	// With the token set, the console is served outside /v1/: signed out,
	// it sends the browser to its sign-in form.
	if code, body := apiGet(t, apiBase+"/", ""); code != 200 || !strings.Contains(body, `id="signin"`) {
		t.Errorf("the console signed out: %d %s", code, body)
	}
	if code, body := apiGet(t, apiBase+"/v1/check?domain=ok.test&client_ip=nonsense", "s3cret"); code != 400 || !strings.Contains(body, `"error"`) {
		t.Errorf("a bad client_ip: %d %s", code, body)
	}
	t.Run("cases", func(t *testing.T) {
		for _, c := range spectest.Cases {
			domain := c.Sender
			if i := strings.LastIndex(domain, "@"); i >= 0 {
				domain = strings.TrimSuffix(domain[i+1:], ">")
			}
			if c.ClientName != "" || domain == "" || strings.ContainsAny(domain, "<>") {
				continue // only a milter session has an MTA name; the null sender has no domain
			}
			t.Run(c.Name, func(t *testing.T) {
				t.Parallel()
				q := url.Values{"domain": {domain}}
				args := []string{"check", "--json", "--config", cfgPath}
				if c.ClientIP != "" {
					q.Set("client_ip", c.ClientIP)
					args = append(args, "--client-ip", c.ClientIP)
				}
				if c.HELO != "" {
					q.Set("helo", c.HELO)
					args = append(args, "--helo", c.HELO)
				}
				_, out, errOut := runCLI(t, "", append(args, domain)...)
				cli := parseLines(t, out)
				if len(cli) != 1 {
					t.Fatalf("CLI: %d report lines; stderr %s", len(cli), errOut)
				}
				code, body := apiGet(t, apiBase+"/v1/check?"+q.Encode(), "s3cret")
				if code != 200 {
					t.Fatalf("API: %d %s", code, body)
				}
				api := parseLines(t, body)[0]
				if api.Domain != cli[0].Domain || api.Verdict != cli[0].Verdict {
					t.Errorf("API %s %s, CLI %s %s", api.Domain, api.Verdict, cli[0].Domain, cli[0].Verdict)
				}
				apiChecks, _ := json.Marshal(api.Checks)
				cliChecks, _ := json.Marshal(cli[0].Checks)
				if string(apiChecks) != string(cliChecks) {
					t.Errorf("checks differ\nAPI %s\nCLI %s", apiChecks, cliChecks)
				}
			})
		}
	})
	_, metrics := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	for _, want := range []string{`mxguard_api_requests_total{code="401"} 1`, `mxguard_api_requests_total{code="400"} 1`,
		`mxguard_api_requests_total{code="429"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^mxguard_decisions_total\{.*\} [1-9].*$`).FindString(metrics); m != "" {
		t.Errorf("API checks were counted as mail decisions: %s", m)
	}
}

// api.listen changes only on restart, so a reload cannot take the token
// away from a listener beyond loopback, even by moving listen to loopback.
func TestReloadKeepsTheTokenOfAnExposedAPI(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mxguard.yaml")
	writeFile(t, path, "api:\n  listen: 192.0.2.1:9892\n  token: s3cret\n")
	started, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	d := &daemon{path: path, cfg: started, started: started, level: new(slog.LevelVar)}
	d.log = slog.New(slog.NewTextHandler(&log, nil))
	d.metrics = metrics.New(d.engine.Load)
	engine, err := d.newEngine(started, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.engine.Store(engine)
	d.api = checkapi.New(d.apiConfig(started, engine), checkapi.Options{Log: d.log}) // never serving: only its config matters

	writeFile(t, path, "api:\n  listen: 127.0.0.1:9892\n")
	if err := d.reload(); err == nil || !strings.Contains(err.Error(), "listens on 192.0.2.1:9892 until a restart") {
		t.Errorf("reload without the token: %v", err)
	}
	if d.cfg.API.Token != "s3cret" {
		t.Errorf("the running token is now %q", d.cfg.API.Token)
	}
	writeFile(t, path, "api:\n  listen: 192.0.2.1:9892\n  token: n3w\n")
	if err := d.reload(); err != nil || d.cfg.API.Token != "n3w" {
		t.Errorf("a reload with a new token: %v, token %q", err, d.cfg.API.Token)
	}
}

// SIGTERM closes every listener at once: the API takes no new checks while
// the milter drains its open sessions.
func TestShutdownClosesTheAPIWhileTheMilterDrains(t *testing.T) {
	sb := spectest.Sandbox(t)
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	metricsPort := freeTCPPort(t)
	cfgPath := filepath.Join(t.TempDir(), "mxguard.yaml")
	// A drain longer than waitLimit: the API must close long before it ends.
	writeFile(t, cfgPath, strings.Replace(sandboxConfig(sb, "inet:"+milterAddr, metricsPort, "api:\n  listen: "+apiAddr+"\n"),
		"milter:\n", "milter:\n  drain_timeout: 2m\n", 1))
	d := startDaemon(t, cfgPath, "tcp", milterAddr)
	d.waitLog(t, "mxguard serving") // the API listens too
	session, err := net.Dial("tcp", milterAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	waitUntil(t, "the session to open", func() bool {
		_, m := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
		return strings.Contains(m, "mxguard_active_sessions 1")
	})
	if code, _ := apiGet(t, "http://"+apiAddr+"/v1/check?domain=ok.test", ""); code != 200 {
		t.Fatalf("API before SIGTERM: %d", code)
	}

	d.signal(t, syscall.SIGTERM)
	d.waitLog(t, "draining sessions")
	waitUntil(t, "the API to stop accepting while the milter drains", func() bool {
		c, err := net.DialTimeout("tcp", apiAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	session.Close()
	if err := d.waitExit(t); err != nil {
		t.Errorf("mxguard exited with %v", err)
	}
}
