package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNotSystemdSendsNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if n != nil || err != nil {
		t.Fatalf("FromEnv without NOTIFY_SOCKET: %v, %v", n, err)
	}
	if err := n.Ready("x"); err != nil {
		t.Errorf("a nil Notifier: %v", err)
	}
}

func TestMessagesReachTheSocket(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@mxguard-sdnotify-test-" + strconv.Itoa(os.Getpid())} {
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Setenv("NOTIFY_SOCKET", name)
		n, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		for _, send := range []func() error{
			func() error { return n.Ready("serving:\nmilter") },
			n.Reloading,
			func() error { return n.Stopping("draining") },
			n.Watchdog,
		} {
			if err := send(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		var got []string
		buf := make([]byte, 1024)
		for range 4 {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(buf[:k]))
		}
		if got[0] != "READY=1\nSTATUS=serving: milter" {
			t.Errorf("%s: READY sent as %q (a newline in the status would start a new assignment)", name, got[0])
		}
		if !strings.HasPrefix(got[1], "RELOADING=1\nMONOTONIC_USEC=") || got[2] != "STOPPING=1\nSTATUS=draining" || got[3] != "WATCHDOG=1" {
			t.Errorf("%s: sent %q", name, got[1:])
		}
	}
}

func TestUnsupportedSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if _, err := FromEnv(); err == nil {
		t.Error("a vsock address was taken")
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 15 * time.Second, false},
		{"30000000", pid, 15 * time.Second, false},
		{"30000000", "1", 0, false}, // meant for another process
		{"soon", "", 0, true},
		{"0", "", 0, true},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, err := WatchdogInterval()
		if got != c.want || (err != nil) != c.err {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, error %v", c.usec, c.pid, got, err, c.want, c.err)
		}
	}
}
