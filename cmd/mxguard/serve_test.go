package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

// The test binary doubles as the mxguard binary: with MXGUARD_RUN_MAIN set
// it runs main's logic, so tests can start, signal and kill real daemons.
func TestMain(m *testing.M) {
	if os.Getenv("MXGUARD_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// daemon is an `mxguard serve` child process.
type daemonProc struct {
	cmd  *exec.Cmd
	log  *testkit.SyncBuffer
	done chan error
}

// startDaemon runs `mxguard serve --config path` and waits until it serves
// the milter at network/address.
func startDaemon(t *testing.T, path, network, address string) *daemonProc {
	t.Helper()
	d := &daemonProc{log: &testkit.SyncBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(os.Args[0], "serve", "--config", path)
	d.cmd.Env = append(os.Environ(), "MXGUARD_RUN_MAIN=1")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("mxguard log:\n%s", d.log)
		}
	})
	deadline := time.Now().Add(waitLimit)
	for {
		c, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("mxguard exited: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mxguard does not listen on %s: %v\n%s", address, err, d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemonProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the daemon to exit and returns how it ended.
func (d *daemonProc) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- nil // for the cleanup
		return err
	case <-time.After(waitLimit):
		t.Fatal("mxguard did not stop")
		return nil
	}
}

// waitLimit bounds every wait for the daemon: a backstop for a broken
// build, never reached by a working one, however loaded the machine.
const waitLimit = 30 * time.Second

// waitLog waits for a log line containing s.
func (d *daemonProc) waitLog(t *testing.T, s string) {
	t.Helper()
	d.waitLogCount(t, s, 1)
}

// waitLogCount waits for n log lines containing s.
func (d *daemonProc) waitLogCount(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for strings.Count(d.log.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %q in the log:\n%s", strings.Count(d.log.String(), s), n, s, d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sandboxConfig is a daemon configuration for the check-table sandbox.
// The message checks are off: unsigned lab mail would be flagged for them.
// withMessageChecks turns them on for the tests about them.
func sandboxConfig(sb *smtptest.Sandbox, listen string, metricsPort int, extra string) string {
	return fmt.Sprintf(`milter:
  listen: %s
  socket_mode: "0600"
metrics:
  listen: 127.0.0.1:%d
decision_timeout: 5s
resolver:
  servers: [%s]
  timeout: 500ms
probe:
  port: %d
  allow_networks: [127.0.0.0/8, "::1/128"]
  connect_timeout: %s
  greeting_timeout: %s
outbound:
  ips: [%s, %s]
  dnsbl_zones: [%s]
identity:
  skip_networks: []
inventory:
  path: ""
%s  message: false
%s`, listen, metricsPort, sb.DNS.Addr, sb.Port, spectest.ConnectTimeout, spectest.GreetingTimeout,
		spectest.IPOutDual, spectest.IPOutOnly, spectest.DNSBL, spectest.DomainBlocklistYAML, extra)
}

// withMessageChecks is a sandboxConfig with the message checks on.
func withMessageChecks(cfg string) string {
	return strings.Replace(cfg, "\n  message: false\n", "\n  message: true\n", 1)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func header(t *testing.T, network, address, from string) string {
	t.Helper()
	res, err := smtptest.PlayMilter(network, address, smtptest.MilterConn{
		ClientIP: "127.0.3.1", ClientName: "mail.good.test", HELO: "mail.good.test",
		Messages: []smtptest.MilterMessage{{From: from, To: []string{"x@example.net"}, Body: "hi\r\n"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Reply != "" {
		return res[0].Reply
	}
	var hs []string
	for _, h := range res[0].Headers {
		hs = append(hs, h[0]+": "+h[1])
	}
	return strings.Join(hs, "\n")
}

func TestServeUnixSocketMetricsReloadAndDrain(t *testing.T) {
	sb := spectest.Sandbox(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "milter.sock")
	metricsPort := freeTCPPort(t)
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	good := sandboxConfig(sb, "unix:"+sock, metricsPort, "")
	writeFile(t, cfgPath, good)
	// A stale socket from a crash does not stop the start.
	if l, err := net.Listen("unix", sock); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	d := startDaemon(t, cfgPath, "unix", sock)

	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if got := header(t, "unix", sock, "a@some-refused.test"); got != "X-MXGuard: flag; domain=some-refused.test; ip=127.0.3.1; mx.port25=warn" {
		t.Errorf("header %q", got)
	}
	if got := header(t, "unix", sock, "a@refused.test"); !strings.HasPrefix(got, "451 4.7.1 refused.test: mx.port25 fail") {
		t.Errorf("reply %q", got)
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	if code, body := httpGet(t, metricsURL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	// The sessions end on the server a moment after the client has its answer.
	var body string
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		_, body = httpGet(t, metricsURL+"/metrics")
		if strings.Contains(body, "mxguard_active_sessions 0") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{
		`mxguard_decisions_total{mode="enforce",verdict="flag"} 1`,
		`mxguard_decisions_total{mode="enforce",verdict="defer"} 1`,
		`mxguard_check_results_total{check="mx.port25",status="fail"} 1`,
		`mxguard_dns_queries_total{outcome="noerror",type="MX"}`,
		`mxguard_probes_total{outcome="refused"} 1`,
		`mxguard_cache_lookups_total{cache="dns",result="miss"}`,
		`mxguard_cache_entries{cache="dns"}`,
		`mxguard_decision_duration_seconds_count 2`,
		`mxguard_active_sessions 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}

	// A broken file keeps the running configuration.
	writeFile(t, cfgPath, good+"header:\n  nmae: X-Other\n")
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration reload failed")
	if !strings.Contains(d.log.String(), `mxguard.yaml:`) || !strings.Contains(d.log.String(), `unknown key \"nmae\"`) {
		t.Errorf("the reload error does not name the file and line:\n%s", d.log)
	}
	if got := header(t, "unix", sock, "a@ok.test"); got != "X-MXGuard: pass; domain=ok.test; ip=127.0.3.1" {
		t.Errorf("after a bad reload: %q", got)
	}
	// A good file takes effect.
	writeFile(t, cfgPath, good+"header:\n  name: X-Relay-Check\npolicy:\n  actions:\n    mx.port25: reject\n")
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration reloaded")
	if got := header(t, "unix", sock, "a@ok.test"); got != "X-Relay-Check: pass; domain=ok.test; ip=127.0.3.1" {
		t.Errorf("after a good reload: %q", got)
	}
	if got := header(t, "unix", sock, "a@refused.test"); !strings.HasPrefix(got, "550 5.7.1 ") {
		t.Errorf("after a good reload: %q", got)
	}
	if _, body := httpGet(t, metricsURL+"/metrics"); !strings.Contains(body, `mxguard_config_reloads_total{result="error"} 1`) ||
		!strings.Contains(body, `mxguard_config_reloads_total{result="ok"} 1`) {
		t.Error("reloads not counted")
	}

	d.signal(t, syscall.SIGTERM)
	if err := d.waitExit(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind: %v", err)
	}
	for _, want := range []string{"draining sessions", "mxguard stopped", `msg=decision queue_id=NOQUEUE verdict=defer subject=envelope domain=refused.test client=127.0.3.1`} {
		if !strings.Contains(d.log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestServeRefusesALiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "milter.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, cfg, "milter:\n  listen: unix:"+sock+"\nmetrics:\n  listen: \"\"\n")
	var stderr bytes.Buffer
	if code := run([]string{"serve", "--config", cfg}, nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "something is already listening") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	ok, bad := filepath.Join(dir, "ok.yaml"), filepath.Join(dir, "bad.yaml")
	writeFile(t, ok, "probe:\n  greeting_timeout: 15s\n")
	writeFile(t, bad, "probe:\n  greeting_timeout: 15\n")
	code, out, _ := runCLI(t, "", "validate", "--config", ok)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("valid file: %d %q", code, out)
	}
	code, _, errOut := runCLI(t, "", "validate", "--config", bad)
	if code != exitUsage || !strings.Contains(errOut, bad+`:2: probe.greeting_timeout: "15" is not a duration`) {
		t.Errorf("invalid file: %d %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "", "validate"); code != 0 {
		t.Errorf("the built-in configuration does not validate: %d", code)
	}
}

// SIGHUP with a broken file, again and again, while transactions flow: the
// running configuration keeps serving every one of them.
func TestReloadUnderLoad(t *testing.T) {
	sb := spectest.Sandbox(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "milter.sock")
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	good := sandboxConfig(sb, "unix:"+sock, freeTCPPort(t), "")
	writeFile(t, cfgPath, good)
	d := startDaemon(t, cfgPath, "unix", sock)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := smtptest.PlayMilter("unix", sock, smtptest.MilterConn{
					ClientIP: "127.0.3.1", ClientName: "mail.good.test", HELO: "mail.good.test",
					Messages: []smtptest.MilterMessage{{From: "a@ok.test", To: []string{"x@example.net"}, Body: "hi\r\n"}},
				})
				if err != nil {
					bad.Add(1)
					continue
				}
				if v, _ := res[0].Header("X-MXGuard"); v == "pass; domain=ok.test; ip=127.0.3.1" {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	broken := []string{"probe:\n  port: many\n", "policy:\n  actions:\n    mx.port25: explode\n", "resolver: [\n", "---\n---\nx: 1\n", "milter:\n  listen: tcp:nowhere\n"}
	for i, b := range broken {
		// Transactions are served between one reload and the next, however
		// slowly a loaded machine runs the clients.
		served := ok.Load() + bad.Load()
		for deadline := time.Now().Add(waitLimit); ok.Load()+bad.Load() == served; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no transaction served before reload %d", i+1)
			}
		}
		writeFile(t, cfgPath, good+b)
		d.signal(t, syscall.SIGHUP)
		d.waitLogCount(t, "configuration reload failed", i+1)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == 0 || bad.Load() != 0 {
		t.Errorf("during %d bad reloads: %d transactions served, %d failed", len(broken), ok.Load(), bad.Load())
	}
	t.Logf("%d bad reloads under load: %d transactions, all served by the running configuration", len(broken), ok.Load())
}
