package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spectest"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET.
type fakeSystemd struct {
	conn *net.UnixConn
}

func newFakeSystemd(t *testing.T) (*fakeSystemd, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeSystemd{conn: conn}, path
}

// next returns the next message that is not a watchdog ping.
func (f *fakeSystemd) next(t *testing.T) map[string]string {
	t.Helper()
	for {
		m := f.read(t)
		if m["WATCHDOG"] == "" {
			return m
		}
	}
}

func (f *fakeSystemd) read(t *testing.T) map[string]string {
	t.Helper()
	buf := make([]byte, 4096)
	f.conn.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := f.conn.Read(buf)
	if err != nil {
		t.Fatalf("no message from mxguard: %v", err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("malformed notification line %q in %q", line, buf[:n])
		}
		m[k] = v
	}
	return m
}

func TestServeNotifiesSystemd(t *testing.T) {
	sb := spectest.Sandbox(t)
	dir := t.TempDir()
	fake, socket := newFakeSystemd(t)
	t.Setenv("NOTIFY_SOCKET", socket)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50ms
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	metricsPort := freeTCPPort(t)
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	good := sandboxConfig(sb, "inet:"+milterAddr, metricsPort, "")
	writeFile(t, cfgPath, good)
	d := startDaemon(t, cfgPath, "tcp", milterAddr)

	ready := fake.next(t)
	if ready["READY"] != "1" || !strings.Contains(ready["STATUS"], "milter inet:"+milterAddr) {
		t.Fatalf("first notification %v, want READY=1 with the listeners in STATUS", ready)
	}
	// READY means every listener answers, the metrics one included.
	if code, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", metricsPort)); code != 200 {
		t.Errorf("/healthz %d after READY", code)
	}
	for i := 0; i < 2; i++ {
		if m := fake.read(t); m["WATCHDOG"] != "1" {
			t.Fatalf("got %v, want watchdog pings while serving", m)
		}
	}

	d.signal(t, syscall.SIGHUP)
	reloading := fake.next(t)
	if reloading["RELOADING"] != "1" || reloading["MONOTONIC_USEC"] == "" {
		t.Fatalf("on SIGHUP got %v, want RELOADING=1 with MONOTONIC_USEC", reloading)
	}
	if m := fake.next(t); m["READY"] != "1" || strings.Contains(m["STATUS"], "failed") {
		t.Fatalf("after a good reload got %v, want READY=1", m)
	}

	writeFile(t, cfgPath, good+"no_such_key: 1\n")
	d.signal(t, syscall.SIGHUP)
	if m := fake.next(t); m["RELOADING"] != "1" {
		t.Fatalf("on SIGHUP got %v, want RELOADING=1", m)
	}
	if m := fake.next(t); m["READY"] != "1" || !strings.Contains(m["STATUS"], "reload failed") {
		t.Fatalf("after a failed reload got %v, want READY=1 and a STATUS that says so", m)
	}

	d.signal(t, syscall.SIGTERM)
	if m := fake.next(t); m["STOPPING"] != "1" {
		t.Fatalf("on SIGTERM got %v, want STOPPING=1", m)
	}
	select {
	case err := <-d.done:
		d.done <- nil // for the cleanup
		if err != nil {
			t.Fatalf("mxguard exited with %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("mxguard did not stop")
	}
}

func TestServeRefusesABadNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	code, _, stderr := runServeCLI(t)
	if code != exitUsage || !strings.Contains(stderr, "NOTIFY_SOCKET") {
		t.Errorf("exit %d, stderr %q; want %d naming NOTIFY_SOCKET", code, stderr, exitUsage)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "soon")
	code, _, stderr = runServeCLI(t)
	if code != exitUsage || !strings.Contains(stderr, "WATCHDOG_USEC") {
		t.Errorf("exit %d, stderr %q; want %d naming WATCHDOG_USEC", code, stderr, exitUsage)
	}
}

func runServeCLI(t *testing.T) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := run([]string{"serve", "--config", filepath.Join(t.TempDir(), "absent.yaml")}, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}
