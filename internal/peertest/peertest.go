// Package peertest plays the hostile local users of the front-end tests: a
// crowd of connections opened by a child process (the test binary itself,
// run again) under another user, as a hosting customer's code on the relay
// would. A test package that uses it calls Main from its TestMain.
package peertest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Behaviours of a crowd's connections.
const (
	// Silent connects and says nothing.
	Silent = "silent"
	// MilterMail negotiates the milter protocol as Postfix does, sends one
	// MAIL FROM and goes silent.
	MilterMail = "milter-mail"
	// HalfPolicyRequest sends the first lines of a policy request and never
	// ends it.
	HalfPolicyRequest = "half-policy-request"
	// HTTPNotFound asks for /x on a keep-alive connection, reads the answer
	// and keeps the connection open.
	HTTPNotFound = "http-not-found"
)

const childEnv = "MXGUARD_PEERTEST_CHILD"

// Main runs the child's part when the binary was started as one, else the
// tests.
func Main(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	code := m.Run()
	if copied.path != "" {
		os.RemoveAll(filepath.Dir(copied.path))
	}
	os.Exit(code)
}

// Crowd is a child process holding connections.
type Crowd struct {
	cmd   *exec.Cmd
	stdin io.Closer
	// Opened is how many connections were still open when the child had
	// opened them all; the others were closed by the server.
	Opened int
}

// Stranger is the unprivileged user crowds run as by default, as a
// customer's web application would.
const Stranger = "nobody"

// RequireRoot fails (in CI) or skips the test unless it runs as root, which
// starting a process under another user needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test starts processes under other users: run it as root")
	}
	t.Skip("needs root to start processes under other users")
}

// Start opens n connections to address (network "tcp" or "unix") from a
// child running as the local user username, each behaving as behaviour,
// and returns once all are made. The child holds them until Stop or the
// end of the test.
func Start(t testing.TB, username, behaviour, network, address string, n int) *Crowd {
	t.Helper()
	RequireRoot(t)
	u, err := user.Lookup(username)
	if err != nil {
		t.Fatalf("no user %s: %v", username, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	bin, err := childBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = filepath.Dir(bin)
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{behaviour, network, address, strconv.Itoa(n)}, "|"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the crowd: %v", err)
	}
	c := &Crowd{cmd: cmd, stdin: stdin}
	t.Cleanup(c.Stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "open %d", &c.Opened); err != nil || scanErr != nil {
		t.Fatalf("the crowd said %q: %v %v", line, err, scanErr)
	}
	return c
}

var copied struct {
	once sync.Once
	path string
	err  error
}

// childBinary is a copy of the test binary that other users may run: the
// one go test built sits in a directory only its owner may enter.
func childBinary() (string, error) {
	copied.once.Do(func() {
		dir, err := os.MkdirTemp("", "peertest")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		var data []byte
		if err == nil {
			data, err = os.ReadFile(os.Args[0])
		}
		if err == nil {
			copied.path = filepath.Join(dir, "child")
			err = os.WriteFile(copied.path, data, 0o755)
		}
		copied.err = err
	})
	return copied.path, copied.err
}

// Stop closes the crowd's connections and waits for the child to exit.
func (c *Crowd) Stop() {
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
		c.cmd.Wait()
	}
}

// child opens the connections, reports how many are still open once the
// last is made, and holds them until stdin closes.
func child(spec string) int {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		fmt.Fprintf(os.Stderr, "peertest: bad child spec %q\n", spec)
		return 2
	}
	behaviour, network, address := parts[0], parts[1], parts[2]
	n, _ := strconv.Atoi(parts[3])
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout(network, address, 10*time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "peertest: dial: %v\n", err)
			return 1
		}
		if err := behave(behaviour, c); err != nil {
			c.Close() // the server closed it, or refused what was said
			continue
		}
		conns = append(conns, c)
	}
	var open atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if alive(c) {
				open.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Printf("open %d\n", open.Load())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func behave(behaviour string, c net.Conn) error {
	switch behaviour {
	case Silent:
		return nil
	case MilterMail:
		return milterMail(c)
	case HalfPolicyRequest:
		_, err := io.WriteString(c, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
		return err
	case HTTPNotFound:
		if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetReadDeadline(time.Time{})
		if resp.Close {
			return fmt.Errorf("the server closes the connection")
		}
		return nil
	}
	return fmt.Errorf("unknown behaviour %q", behaviour)
}

// milterMail negotiates as Postfix 3.7 does (protocol 6, every action, the
// no-reply steps) and sends MAIL FROM.
func milterMail(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	opt := make([]byte, 12)
	putUint32(opt[0:], 6)
	putUint32(opt[4:], 0x1ff)
	putUint32(opt[8:], 0x1fffff)
	if err := writePacket(c, 'O', opt); err != nil {
		return err
	}
	if _, err := readPacket(c); err != nil {
		return err
	}
	return writePacket(c, byte(gomilter.CodeMail), []byte("<customer@ok.test>\x00"))
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func writePacket(c net.Conn, code byte, data []byte) error {
	p := make([]byte, 5+len(data))
	putUint32(p, uint32(1+len(data)))
	p[4] = code
	copy(p[5:], data)
	_, err := c.Write(p)
	return err
}

func readPacket(c net.Conn) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return nil, err
	}
	n := int(head[0])<<24 | int(head[1])<<16 | int(head[2])<<8 | int(head[3])
	if n < 1 || n > 1<<16 {
		return nil, fmt.Errorf("a packet of %d octets", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c, p)
	return p, err
}

// alive reports whether the server has not closed c: a read that finds
// nothing within a moment.
func alive(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
