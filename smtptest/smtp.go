package smtptest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// Behavior is how a sandbox SMTP server treats a connection.
type Behavior struct {
	kind   behaviorKind
	delay  time.Duration // before the banner; with Drip, between bytes
	banner string
}

type behaviorKind uint8

const (
	behaviorAccept behaviorKind = iota
	behaviorGreet
	behaviorSilent
	behaviorBlackhole
	behaviorDrip
	behaviorReset
)

// The behaviors of a sandbox mail server.
var (
	// Accept is a real SMTP server (go-smtp) that greets 220 and keeps every
	// message it is sent (see Messages).
	Accept = Behavior{kind: behaviorAccept}
	// Greet554 greets "554 5.7.1 No SMTP service here" (RFC 5321 section 3.1): still
	// an SMTP server.
	Greet554 = Behavior{kind: behaviorGreet, banner: "554 5.7.1 No SMTP service here\r\n"}
	// Silent accepts the TCP connection and never greets.
	Silent = Behavior{kind: behaviorSilent}
	// NotSMTP answers with something that is not SMTP (an SSH banner).
	NotSMTP = Behavior{kind: behaviorGreet, banner: "SSH-2.0-OpenSSH_9.2p1\r\n"}
	// Blackhole never completes the TCP handshake: connects time out, as
	// with a firewall that drops packets.
	Blackhole = Behavior{kind: behaviorBlackhole}
	// Reset accepts the TCP connection and resets it at once.
	Reset = Behavior{kind: behaviorReset}
)

// SlowGreeting greets 220 like Accept, but only after d (postscreen-style).
func SlowGreeting(d time.Duration) Behavior {
	return Behavior{kind: behaviorGreet, delay: d, banner: "220 slow.sandbox.test ESMTP\r\n"}
}

// Banner sends raw bytes after d, then reads until the client leaves: for
// multi-line, malformed or hostile greetings.
func Banner(raw string, d time.Duration) Behavior {
	return Behavior{kind: behaviorGreet, delay: d, banner: raw}
}

// Drip sends raw one byte at a time, every interval: a tarpit.
func Drip(raw string, interval time.Duration) Behavior {
	return Behavior{kind: behaviorDrip, delay: interval, banner: raw}
}

// Message is one message an Accept server received.
type Message struct {
	From string
	To   []string
	Data []byte
}

// SMTPServer is one sandbox mail server bound to one address.
type SMTPServer struct {
	// Addr is the host:port it listens on.
	Addr string

	listener net.Listener
	smtp     *smtp.Server
	fd       int // the blackhole socket
	conns    connStats
	shared   *connStats // the sandbox's, when started by one
	quits    atomic.Int64
	wg       sync.WaitGroup
	closed   chan struct{}

	closeOnce sync.Once
	mu        sync.Mutex
	open      map[net.Conn]struct{}
	messages  []Message
}

// StartSMTP starts a server with behavior b on addr ("127.0.0.5:2525").
// 127.0.0.0/8 is all local on Linux, so each server can have its own address.
func StartSMTP(addr string, b Behavior) (*SMTPServer, error) {
	return startSMTP(addr, b, nil)
}

func startSMTP(addr string, b Behavior, shared *connStats) (*SMTPServer, error) {
	s := &SMTPServer{Addr: addr, fd: -1, closed: make(chan struct{}), open: map[net.Conn]struct{}{}, shared: shared}
	if b.kind == behaviorBlackhole {
		return s, s.startBlackhole(addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtptest: SMTP on %s: %w", addr, err)
	}
	s.listener = countingListener{l, s}
	s.Addr = l.Addr().String()
	if b.kind == behaviorAccept {
		s.smtp = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
			return &session{srv: s}, nil
		}))
		s.smtp.Domain = "mx.sandbox.test"
		s.smtp.ReadTimeout = time.Minute
		s.smtp.WriteTimeout = time.Minute
		s.smtp.ErrorLog = discardLogger{}
		go s.smtp.Serve(s.listener)
		return s, nil
	}
	s.wg.Add(1)
	go s.serveRaw(b)
	return s, nil
}

// serveRaw plays a hand-written greeting (go-smtp always greets 220 at once).
func (s *SMTPServer) serveRaw(b Behavior) {
	defer s.wg.Done()
	for {
		c, err := s.listener.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			switch b.kind {
			case behaviorSilent:
				io.Copy(io.Discard, c) // until the client gives up
				return
			case behaviorReset:
				if tc, ok := c.(interface{ SetLinger(int) error }); ok {
					tc.SetLinger(0) // close sends RST
				}
				return
			case behaviorDrip:
				for i := 0; i < len(b.banner); i++ {
					if !s.sleep(b.delay) {
						return
					}
					if _, err := c.Write([]byte{b.banner[i]}); err != nil {
						return
					}
				}
			default:
				if !s.sleep(b.delay) {
					return
				}
				if _, err := io.WriteString(c, b.banner); err != nil {
					return
				}
			}
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if strings.Contains(strings.ToUpper(string(buf[:n])), "QUIT") {
					s.quits.Add(1)
					// Over before the client can know it: it may connect
					// again at once, and PeakConnections must not count both.
					c.(*countedConn).finish()
					io.WriteString(c, "221 2.0.0 Bye\r\n")
					return
				}
			}
		}()
	}
}

// startBlackhole listens with a backlog of zero and fills that backlog with
// one connection of its own: the kernel then drops further SYNs, so clients
// see a connect timeout, as with a firewall that drops packets.
func (s *SMTPServer) startBlackhole(addr string) error {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil || ap.IP.To4() == nil {
		return fmt.Errorf("smtptest: blackhole needs an IPv4 address, got %q", addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("smtptest: blackhole socket: %w", err)
	}
	sa := &syscall.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err == nil {
		err = syscall.Bind(fd, sa)
	}
	if err == nil {
		err = syscall.Listen(fd, 0)
	}
	if err != nil {
		syscall.Close(fd)
		return fmt.Errorf("smtptest: blackhole on %s: %w", addr, err)
	}
	s.fd = fd
	if sa.Port == 0 {
		got, _ := syscall.Getsockname(fd)
		sa.Port = got.(*syscall.SockaddrInet4).Port
		s.Addr = fmt.Sprintf("%s:%d", ap.IP, sa.Port)
	}
	// One connection fills a zero backlog (the kernel queues backlog+1).
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		syscall.Close(fd)
		return fmt.Errorf("smtptest: blackhole on %s: %w", addr, err)
	}
	s.open[c] = struct{}{}
	return nil
}

// sleep waits d unless the server closes first.
func (s *SMTPServer) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-s.closed:
		return false
	}
}

// Connections is the number of TCP connections accepted so far (always 0
// for a blackhole).
func (s *SMTPServer) Connections() int { return int(s.conns.total.Load()) }

// PeakConnections is the most connections that were open at once.
func (s *SMTPServer) PeakConnections() int { return int(s.conns.peak.Load()) }

// Quits is the number of QUIT commands a hand-written greeting server got
// (Greet554, NotSMTP, SlowGreeting, Banner, Drip).
func (s *SMTPServer) Quits() int { return int(s.quits.Load()) }

// Messages returns what an Accept server has received.
func (s *SMTPServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Close stops the server and drops its connections. Closing twice is harmless.
func (s *SMTPServer) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.close() })
	return err
}

func (s *SMTPServer) close() error {
	close(s.closed)
	var err error
	if s.smtp != nil {
		err = s.smtp.Close()
	} else if s.listener != nil {
		err = s.listener.Close()
	}
	if s.fd >= 0 {
		err = errors.Join(err, syscall.Close(s.fd))
	}
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// countingListener counts connections, and how many are open at once.
type countingListener struct {
	net.Listener
	s *SMTPServer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.conns.opened()
	if l.s.shared != nil {
		l.s.shared.opened()
	}
	return &countedConn{Conn: c, s: l.s}, nil
}

type countedConn struct {
	net.Conn
	s    *SMTPServer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.finish()
	return c.Conn.Close()
}

// finish counts the connection as closed.
func (c *countedConn) finish() {
	c.once.Do(func() {
		c.s.conns.closed()
		if c.s.shared != nil {
			c.s.shared.closed()
		}
	})
}

// connStats counts connections: all of them, open now, most open at once.
type connStats struct {
	total, active, peak atomic.Int64
}

func (c *connStats) opened() {
	c.total.Add(1)
	n := c.active.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
}

func (c *connStats) closed() { c.active.Add(-1) }

// session keeps each message for Messages.
type session struct {
	srv *SMTPServer
	msg Message
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.msg = Message{From: from}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.Data = data
	s.srv.mu.Lock()
	s.srv.messages = append(s.srv.messages, s.msg)
	s.srv.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.msg = Message{} }
func (s *session) Logout() error { return nil }

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// SetLinger reaches the TCP connection, so that Reset can send an RST.
func (c *countedConn) SetLinger(sec int) error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.SetLinger(sec)
	}
	return nil
}
