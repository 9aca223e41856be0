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
	if err := d.waitExit(t); err != nil {
		t.Fatalf("mxguard exited with %v", err)
	}
}

// Trouble with systemd's side of things is logged; mxguard serves anyway.
func TestServeServesDespiteABadNotifySocket(t *testing.T) {
	sb := spectest.Sandbox(t)
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	t.Setenv("WATCHDOG_USEC", "soon")
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfgPath := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, cfgPath, sandboxConfig(sb, "inet:"+milterAddr, freeTCPPort(t), ""))
	d := startDaemon(t, cfgPath, "tcp", milterAddr)
	d.waitLog(t, "mxguard serving")
	for _, want := range []string{"not telling systemd how mxguard is doing", "NOTIFY_SOCKET", "no watchdog pings", "WATCHDOG_USEC"} {
		if !strings.Contains(d.log.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, d.log)
		}
	}
}
