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
	"github.com/mxguard/mxguard/smtptest"
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

// The self-check's blocklist lookups (egress.dnsbl), by hand: every answer
// a list gives, for IPv4 and IPv6 addresses, in JSON and in the exit code.
func TestCheckSelfBlocklists(t *testing.T) {
	sb := spectest.Sandbox(t)
	z := sb.Zone
	bl := spectest.DNSBL
	z.List(bl, "127.0.2.10", "127.0.0.2", "listed for spam, see https://bl.test/127.0.2.10").
		List(bl, "2001:db8::10", "127.0.0.4", "listed v6\x00\x1b[2J").
		List(bl, "127.0.2.12", "127.255.255.254", "").
		SetFault(smtptest.ListedName(bl, "127.0.2.13"), smtptest.ServFail).
		SetFault(smtptest.ListedName(bl, "2001:db8::13"), smtptest.Drop).
		ListEverything("all.bl.test", "127.0.0.2").
		List("listed.bl.test", spectest.IPOutDual, "127.0.0.2", "listed, says listed.bl.test")
	dir := t.TempDir()
	config := func(name, ips, zones string) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, fmt.Sprintf("resolver:\n  timeout: 300ms\noutbound:\n  ips: [%s]\n  helo: relay.good.test\n  dnsbl_zones: %s\n", ips, zones))
		return path
	}
	all := config("all.yaml", `127.0.2.10, "2001:db8::10", 127.0.2.11, "2001:db8::11", 127.0.2.12, 127.0.2.13, "2001:db8::13"`,
		"\n    - {zone: "+bl+", refused: [127.255.255.0/24]}")
	code, out, errOut := runCLI(t, "", "check", "--self", "--json", "--config", all, "--resolver", sb.DNS.Addr)
	want := map[string]string{
		"127.0.2.10":   "fail 127.0.2.10 is listed in dnsbl.bl.test (127.0.0.2: listed for spam, see https://bl.test/127.0.2.10)",
		"2001:db8::10": "fail 2001:db8::10 is listed in dnsbl.bl.test (127.0.0.4: listed v6??[2J)",
		"127.0.2.11":   "pass 127.0.2.11 is not listed in dnsbl.bl.test",
		"2001:db8::11": "pass 2001:db8::11 is not listed in dnsbl.bl.test",
		"127.0.2.12":   "temperror 127.0.2.12: dnsbl.bl.test: query refused (127.255.255.254): see the list's terms of use",
		"127.0.2.13":   "temperror 127.0.2.13: dnsbl.bl.test: A 13.2.0.127.dnsbl.bl.test: SERVFAIL",
		"2001:db8::13": "temperror 2001:db8::13: dnsbl.bl.test: A 3.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.dnsbl.bl.test: timeout",
	}
	lines := parseLines(t, out)
	if code != exitFlag || len(lines) != len(want) {
		t.Fatalf("exit %d, %d reports (want 1, %d):\n%s%s", code, len(lines), len(want), out, errOut)
	}
	for _, l := range lines {
		c := l.Checks[len(l.Checks)-1]
		if got := fmt.Sprintf("%s %s", c.Status, c.Detail); c.ID != "egress.dnsbl" || !strings.HasPrefix(got, want[l.Domain]) || c.IP.String() != l.Domain {
			t.Errorf("%s: %s %s (ip %s), want %s", l.Domain, c.ID, got, c.IP, want[l.Domain])
		}
	}

	// One address whose host checks pass: the blocklists alone make the
	// exit status and the headline.
	for _, c := range []struct {
		zones, headline, detail string
		exit                    int
	}{
		{"[" + bl + "]", "PASS", "127.0.2.1 is not listed in dnsbl.bl.test", exitPass},
		{"[all.bl.test]", "TEMPERROR", "all.bl.test: broken: it lists 127.0.0.1, which no list may list (RFC 5782 section 5)", exitTempError},
		{"[" + bl + ", listed.bl.test]", "FLAG", "127.0.2.1 is listed in listed.bl.test (127.0.0.2: listed, says listed.bl.test)", exitFlag},
	} {
		path := config("one.yaml", spectest.IPOutDual, c.zones)
		code, out, errOut := runCLI(t, "", "check", "--self", "--config", path, "--resolver", sb.DNS.Addr)
		if code != c.exit || headline(t, out) != c.headline || !strings.Contains(out, "egress.dnsbl") || !strings.Contains(out, c.detail) {
			t.Errorf("zones %s: exit %d (want %d)\n%s%s", c.zones, code, c.exit, out, errOut)
		}
		if c.exit == exitFlag && !strings.Contains(out, "egress.dnsbl (fail): Find out why listed.bl.test lists 127.0.2.1") {
			t.Errorf("no fix text:\n%s", out)
		}
	}
}

// serve runs the self-check at start, logs its findings and exports them.
func TestServeSelfCheck(t *testing.T) {
	sb := spectest.Sandbox(t)
	port, metricsPort := freeTCPPort(t), freeTCPPort(t)
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, cfg, fmt.Sprintf("milter:\n  listen: inet:127.0.0.1:%d\nmetrics:\n  listen: 127.0.0.1:%d\nresolver:\n  servers: [%s]\n"+
		"outbound:\n  ips: [127.0.2.1, 127.0.2.2]\n  helo: relay.good.test\n  dnsbl_zones: [%s]\n", port, metricsPort, sb.DNS.Addr, spectest.DNSBL))
	sb.Zone.List(spectest.DNSBL, spectest.IPOutOnly, "127.0.0.2", "listed\x00 for spam")
	d := startDaemon(t, cfg, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	want := []string{
		`mxguard_self_check{address="127.0.2.2",check="client.ptr",status="fail"} 1`,
		`mxguard_self_check{address="127.0.2.1",check="client.fcrdns",status="pass"} 1`,
		`mxguard_self_check{address="127.0.2.1",check="helo.matches-ptr",status="warn"} 0`,
		`mxguard_self_check{address="127.0.2.2",check="egress.dnsbl",status="fail"} 1`,
		`mxguard_self_check{address="127.0.2.1",check="egress.dnsbl",status="pass"} 1`,
		`mxguard_egress_listed{address="127.0.2.2",zone="dnsbl.bl.test"} 1`,
		`mxguard_egress_listed{address="127.0.2.1",zone="dnsbl.bl.test"} 0`,
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
		`msg="egress address listed" address=127.0.2.2 zone=dnsbl.bl.test code=127.0.0.2 reason="listed? for spam"`,
		`msg="egress self-check" address=127.0.2.2 helo=relay.good.test check=egress.dnsbl status=fail detail="127.0.2.2 is listed in dnsbl.bl.test (127.0.0.2: listed? for spam)"`,
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
