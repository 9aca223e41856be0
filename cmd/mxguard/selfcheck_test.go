package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
)

// The egress self-check, by hand: one report per single outbound address,
// judged as receivers judge this relay.
func TestCheckSelf(t *testing.T) {
	sb := spectest.Sandbox(t)
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, cfg, "outbound:\n  ips: [127.0.2.1, 127.0.2.2, 127.0.2.3, 10.0.0.0/8]\n  helo: relay.good.test\n")
	code, out, errOut := runCLI(t, "", "check", "--self", "--json", "--config", cfg, "--resolver", sb.DNS.Addr)
	lines := parseLines(t, out)
	if code != exitFlag || len(lines) != 3 {
		t.Fatalf("exit %d, %d reports (want 1, 3):\n%s%s", code, len(lines), out, errOut)
	}
	want := map[string]string{ // the host checks' findings for each address
		"127.0.2.1": "",
		"127.0.2.2": "client.ptr=fail",
		"127.0.2.3": "helo.matches-ptr=warn",
	}
	for _, l := range lines {
		var got []string
		for _, c := range l.Checks {
			if st := c.Status.String(); !c.ID.AboutDomain() && (st == "warn" || st == "fail" || st == "temperror") {
				got = append(got, fmt.Sprintf("%s=%s", c.ID, c.Status))
			}
		}
		if w, ok := want[l.Domain]; !ok || strings.Join(got, " ") != w {
			t.Errorf("%s: %v, want %q", l.Domain, got, w)
		}
	}
	// --helo overrides outbound.helo, and a report could say nothing else.
	code, out, _ = runCLI(t, "", "check", "--self", "--config", cfg, "--resolver", sb.DNS.Addr, "--helo", "localhost")
	if code != exitFlag || strings.Count(out, `HELO "localhost" is a single label`) != 3 {
		t.Errorf("--helo localhost: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "", "check", "--self", "example.com"); code != exitUsage || !strings.Contains(errOut, "--self") {
		t.Errorf("--self with a domain: exit %d %s", code, errOut)
	}
}

// serve runs the self-check at start, logs its findings and exports them.
func TestServeSelfCheck(t *testing.T) {
	sb := spectest.Sandbox(t)
	port, metricsPort := freeTCPPort(t), freeTCPPort(t)
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, cfg, fmt.Sprintf("milter:\n  listen: inet:127.0.0.1:%d\nmetrics:\n  listen: 127.0.0.1:%d\nresolver:\n  servers: [%s]\n"+
		"outbound:\n  ips: [127.0.2.1, 127.0.2.2]\n  helo: relay.good.test\n", port, metricsPort, sb.DNS.Addr))
	d := startDaemon(t, cfg, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	want := []string{
		`mxguard_self_check{address="127.0.2.2",check="client.ptr",status="fail"} 1`,
		`mxguard_self_check{address="127.0.2.1",check="client.fcrdns",status="pass"} 1`,
		`mxguard_self_check{address="127.0.2.1",check="helo.matches-ptr",status="warn"} 0`,
	}
	var metrics string
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, metrics = httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)); strings.Contains(metrics, want[0]) {
			break
		}
	}
	for _, w := range want {
		if !strings.Contains(metrics, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	log := d.log.String()
	for _, w := range []string{`msg="egress self-check" address=127.0.2.2 helo=relay.good.test check=client.ptr status=fail`,
		`msg="egress self-check passed" address=127.0.2.1`} {
		if !strings.Contains(log, w) {
			t.Errorf("the log lacks %s:\n%s", w, log)
		}
	}
}

// A reload names every changed setting that only a restart applies.
func TestReloadNamesRestartOnlySettings(t *testing.T) {
	old, err := config.Parse("old.yaml", []byte("metrics:\n  listen: 127.0.0.1:9891\n"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := config.Parse("new.yaml", []byte("metrics:\n  listen: 127.0.0.1:9892\npolicy_service:\n  listen: inet:127.0.0.1:10040\n"))
	if err != nil {
		t.Fatal(err)
	}
	var log testkit.SyncBuffer
	d := &daemon{started: old, log: slog.New(slog.NewTextHandler(&log, nil))}
	d.warnRestartOnly(next)
	for _, key := range []string{"metrics.listen", "policy_service.listen"} {
		if !strings.Contains(log.String(), `msg="this setting changes only on restart" key=`+key) {
			t.Errorf("no warning for %s:\n%s", key, log.String())
		}
	}
	if strings.Count(log.String(), "changes only on restart") != 2 {
		t.Errorf("warnings for unchanged settings:\n%s", log.String())
	}
}
