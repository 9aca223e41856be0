// Package redislab runs private redis-server instances on loopback for
// mxguard's fleet-cache tests and benchmarks (Debian's redis-server; no
// system instance is touched).
package redislab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server.
type Server struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan error
}

// Available says why no redis-server can run here, or nil. redis-cli
// (redis-tools, a dependency of Debian's redis-server) makes clusters.
func Available() error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return errors.New("redis-server is not installed (apt-get install redis-server)")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return errors.New("redis-cli is not installed (apt-get install redis-tools)")
	}
	return nil
}

// Require fails the test under CI, and skips it elsewhere, when no
// redis-server can run.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it (.ci/run)", err)
		}
		t.Skip(err)
	}
}

// Start starts a server with extra config directives (e.g. "requirepass",
// "s3cret") and stops it when the test ends.
func Start(t testing.TB, directives ...string) *Server {
	t.Helper()
	Require(t)
	s, err := StartServer(t.TempDir(), directives...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// StartServer starts a server keeping its files in dir; Kill stops it.
func StartServer(dir string, directives ...string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return startServer(dir, port, nil, directives)
}

// startServer starts redis-server with the arguments before (a
// configuration file) and the directives.
func startServer(dir string, port int, before, directives []string) (*Server, error) {
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), dir: dir}
	s.args = append(append(before, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no"), prefixed(directives)...)
	return s, s.start()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func prefixed(directives []string) []string {
	out := make([]string, len(directives))
	for i, d := range directives {
		out[i] = d
		if i%2 == 0 {
			out[i] = "--" + d
		}
	}
	return out
}

func (s *Server) start() error {
	s.cmd = exec.Command("redis-server", s.args...)
	s.cmd.Dir = s.dir
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // it goes when this process ends in any way
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-s.done:
			return fmt.Errorf("redis-server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server does not listen on %s: %w", s.Addr, err)
		}
	}
}

func (s *Server) running() bool { return s.cmd != nil }

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGCONT) // a paused one must be able to die
		s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

// Restart starts the server again on the same address, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// Pause stops the server answering (SIGSTOP) without closing connections,
// as a wedged server does, and returns once it is stopped (the signal is
// delivered asynchronously); Resume lets it go on.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGSTOP)
	s.waitState(t, "stopped", func(state byte) bool { return state == 'T' })
}

func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.waitState(t, "running", func(state byte) bool { return state != 'T' })
}

// waitState waits for the process state in /proc/PID/stat (proc(5)).
func (s *Server) waitState(t testing.TB, what string, ok func(state byte) bool) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		stat, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command name, which is in parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && ok(stat[i+2]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server is not %s: %s", what, stat)
		}
	}
}
