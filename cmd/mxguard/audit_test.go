package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mxguard/mxguard/internal/notify"
	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

// auditLine is one line of audit --json.
type auditLine struct {
	Domain       string `json:"domain"`
	Verdict      string `json:"verdict"`
	Change       string `json:"change"`
	FailingSince string `json:"failing_since"`
}

func auditLines(t *testing.T, out string) map[string]auditLine {
	t.Helper()
	lines := map[string]auditLine{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var a auditLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		lines[a.Domain] = a
	}
	return lines
}

// inventoryConfig is a sandbox configuration keeping its inventory at path.
func inventoryConfig(t *testing.T, sb *smtptest.Sandbox, path, milter, extra string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	text := sandboxConfig(sb, milter, freeTCPPort(t), extra)
	writeFile(t, cfg, strings.Replace(text, "inventory:\n  path: \"\"\n", "inventory:\n  path: "+path+"\n  save_interval: 100ms\n", 1))
	return cfg
}

// An audit of a list, then of the inventory it filled, then after a
// domain was fixed: each says what changed since the one before.
func TestAuditSaysWhatChanged(t *testing.T) {
	sb := spectest.Sandbox(t)
	sb.Zone.MX("later.test", 10, "mx.later.test") // no address yet: mx.targets fails
	spectest.Passing(sb.Zone, "later.test")
	cfg := inventoryConfig(t, sb, filepath.Join(t.TempDir(), "inventory"), "inet:127.0.0.1:1", "")

	list := "ok.test\nrefused.test\n# a comment\nnot a domain!\nuser@later.test\n[127.0.0.1]\n"
	code, out, errOut := runCLI(t, list, "audit", "--config", cfg, "--file", "-", "--json")
	if code != exitDefer {
		t.Errorf("exit %d, want %d:\n%s", code, exitDefer, errOut)
	}
	if !strings.Contains(errOut, "line 4:") || !strings.Contains(errOut, "line 6:") || strings.Contains(errOut, "line 5:") {
		t.Errorf("garbage lines not reported with their numbers:\n%s", errOut)
	}
	first := auditLines(t, out)
	if len(first) != 3 || first["ok.test"].Change != "new" || first["refused.test"].Verdict != "defer" ||
		first["refused.test"].FailingSince == "" || first["ok.test"].FailingSince != "" {
		t.Fatalf("first audit: %+v", first)
	}

	_, out, _ = runCLI(t, "", "audit", "--config", cfg, "--json")
	second := auditLines(t, out)
	if len(second) != 3 || second["ok.test"].Change != "unchanged" || second["refused.test"].Change != "still-failing" ||
		second["refused.test"].FailingSince != first["refused.test"].FailingSince {
		t.Errorf("second audit (of the inventory): %+v", second)
	}

	sb.Zone.A("mx.later.test", "127.0.1.1")
	_, out, _ = runCLI(t, "", "audit", "--config", cfg, "--json")
	if third := auditLines(t, out); third["later.test"].Change != "fixed" || third["later.test"].FailingSince != "" {
		t.Errorf("after the fix: %+v", third["later.test"])
	}

	_, out, _ = runCLI(t, "refused.test\n", "audit", "--config", cfg, "--file", "-", "--csv")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) < 2 || strings.Join(rows[0], ",") != "domain,verdict,change,failing_since,check,status,detail,fix" {
		t.Fatalf("%v %q", err, out)
	}
	found := false
	for _, r := range rows[1:] {
		if r[0] == "refused.test" && r[4] == "mx.port25" && r[5] == "fail" && r[7] != "" && r[2] == "still-failing" {
			found = true
		}
	}
	if !found {
		t.Errorf("no mx.port25 row with its fix: %q", rows)
	}

	for _, args := range [][]string{{"--inventory", "--file", "x"}, {"--json", "--csv"}, {"--since", "1h", "--file", "x"}, {"extra"}} {
		if code, _, _ := runCLI(t, "", append([]string{"audit", "--config", cfg}, args...)...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// webhookSink is a receiver of notifications.
type webhookSink struct {
	mu     sync.Mutex
	events []notify.Event
	bad    int
}

func (w *webhookSink) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	var e notify.Event
	if json.Unmarshal(body, &e) != nil || r.Header.Get("X-MXGuard-Signature") != notify.Signature("hook-secret", body) {
		w.bad++
		return
	}
	w.events = append(w.events, e)
}

func (w *webhookSink) count(domain string) (n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Domain == domain {
			n++
		}
	}
	return n
}

// serve keeps the inventory of the mail it decides, lists it on the API,
// notifies the webhook of verdict changes, takes an audit's results from
// the journal while it owns the file, and keeps it all across a restart.
func TestServeKeepsTheInventory(t *testing.T) {
	sb := spectest.Sandbox(t)
	sink := &webhookSink{}
	hook := httptest.NewServer(sink)
	defer hook.Close()
	inv := filepath.Join(t.TempDir(), "inventory")
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfg := inventoryConfig(t, sb, inv, "inet:"+milterAddr, fmt.Sprintf(`api:
  listen: %s
  token: s3cret
  rate: 1000
notify:
  webhook:
    url: %s
    secret: hook-secret
    allow_private: true
`, apiAddr, hook.URL))
	d := startDaemon(t, cfg, "tcp", milterAddr)
	d.waitLog(t, "mxguard serving")
	header(t, "tcp", milterAddr, "a@ok.test")
	header(t, "tcp", milterAddr, "a@refused.test")
	header(t, "tcp", milterAddr, "b@refused.test")
	listed := func() map[string]map[string]any {
		code, body := apiGet(t, "http://"+apiAddr+"/v1/domains", "s3cret")
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		var page struct{ Domains []map[string]any }
		json.Unmarshal([]byte(body), &page)
		out := map[string]map[string]any{}
		for _, d := range page.Domains {
			out[d["domain"].(string)] = d
		}
		return out
	}
	testkit.WaitFor(t, "both domains in the inventory", func() bool { return len(listed()) == 2 })
	if r := listed()["refused.test"]; r["verdict"] != "defer" || r["messages"] != 2.0 || r["failing_since"] == "" {
		t.Errorf("refused.test: %v", r)
	}
	testkit.WaitFor(t, "the webhook told of refused.test", func() bool { return sink.count("refused.test") == 1 })
	_, metrics := httpGet(t, metricsURL(t, cfg))
	if !strings.Contains(metrics, `mxguard_inventory_domains{verdict="defer"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(metrics, "mxguard_inventory"))
	}

	// An audit beside serve: serve owns the file, the audit its journal.
	sb.Zone.SetFault("ok.test", smtptest.ServFail)
	if code, _, errOut := runCLI(t, "", "audit", "--config", cfg, "--json"); code == exitUsage {
		t.Fatalf("audit beside serve: %s", errOut)
	}
	testkit.WaitFor(t, "serve to take the journal", func() bool { _, err := os.Stat(inv + ".journal"); return os.IsNotExist(err) })

	d.signal(t, syscall.SIGTERM)
	d.waitExit(t)
	d = startDaemon(t, cfg, "tcp", milterAddr)
	d.waitLog(t, "mxguard serving")
	if got := listed(); len(got) != 2 || got["refused.test"]["verdict"] != "defer" {
		t.Errorf("after a restart: %v", got)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.bad != 0 {
		t.Errorf("%d notifications without a good signature", sink.bad)
	}
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// metricsURL is the /metrics address of a sandboxConfig file.
func metricsURL(t *testing.T, cfg string) string {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "  listen: 127.0.0.1:") && addr == "" {
			addr = strings.TrimPrefix(l, "  listen: ")
		}
	}
	return "http://" + addr + "/metrics"
}

// A fleet keeps one inventory: every node adds what it saw, any node's API
// and an audit see every domain, and a change is notified once.
func TestFleetInventory(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	sink := &webhookSink{}
	hook := httptest.NewServer(sink)
	defer hook.Close()
	var milters, apis []string
	var cfgs []string
	for range 2 {
		milter, api := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		cfg := inventoryConfig(t, sb, filepath.Join(t.TempDir(), "inventory"), "inet:"+milter, fmt.Sprintf(`cache:
  shared:
    url: %s
api:
  listen: %s
  rate: 1000
notify:
  webhook:
    url: %s
    secret: hook-secret
    allow_private: true
`, srv.URL, api, hook.URL))
		startDaemon(t, cfg, "tcp", milter).waitLog(t, "shared cache connected")
		milters, apis, cfgs = append(milters, milter), append(apis, api), append(cfgs, cfg)
	}
	header(t, "tcp", milters[0], "a@refused.test")
	testkit.WaitFor(t, "node 0's decision in the fleet's inventory", func() bool {
		code, body := apiGet(t, "http://"+apis[1]+"/v1/domains/refused.test", "")
		return code == 200 && strings.Contains(body, `"messages":1`)
	})
	header(t, "tcp", milters[1], "b@refused.test")
	header(t, "tcp", milters[1], "a@ok.test")
	testkit.WaitFor(t, "both nodes' decisions, seen from node 0", func() bool {
		code, body := apiGet(t, "http://"+apis[0]+"/v1/domains", "")
		return code == 200 && strings.Contains(body, `"domain":"ok.test"`) && strings.Contains(body, `"messages":2`)
	})
	_, out, errOut := runCLI(t, "", "audit", "--config", cfgs[0], "--json")
	if lines := auditLines(t, out); len(lines) != 2 || lines["refused.test"].Change != "new" {
		t.Errorf("an audit of the fleet's inventory: %+v\n%s", lines, errOut)
	}
	testkit.WaitFor(t, "the webhook told of both domains", func() bool { return sink.count("refused.test") >= 1 && sink.count("ok.test") >= 1 })
	if n := sink.count("refused.test"); n != 1 {
		t.Errorf("refused.test's change notified %d times by a fleet of 2, want once", n)
	}
}
