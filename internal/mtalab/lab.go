// Package mtalab runs private MTA instances on loopback, with mxguard as
// their milter, for end-to-end tests and benchmarks: Debian's Postfix, and
// Debian's Sendmail unpacked beside it (the two packages conflict). No
// system instance is touched. Each MTA is set up with the milter snippet
// operators use (configs/postfix/main.cf, configs/sendmail/mxguard.mc).
package mtalab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Options say what a lab does with mail.
type Options struct {
	// Milter is the milter socket ("inet:127.0.0.1:8891"), or "" for none.
	Milter string
	// PolicyService is mxguard's policy service socket
	// ("inet:127.0.0.1:10040"), or "" for none (Postfix only).
	PolicyService string
	// Signer is a DKIM signer's milter socket (OpenDKIM.Socket), put
	// before mxguard's as configs/postfix/opendkim.cf and
	// configs/sendmail/opendkim.mc say; "" for none.
	Signer string
	// Relay is the host:port mail goes on to. Sendmail treats 127.0.0.1 as
	// itself: use another loopback address. Empty discards the mail
	// (Postfix only), to measure smtpd and the milter alone.
	Relay string
}

// Held is a message the MTA holds (Postfix's hold queue, Sendmail's
// quarantine).
type Held struct {
	ID string
	// Reason is the milter's quarantine reason where the MTA keeps it
	// (Sendmail); Postfix does not.
	Reason string
}

// Lab is a running MTA instance. Its services run unprivileged where the
// MTA drops privileges itself; root starts it.
type Lab struct {
	Name string // "postfix" or "sendmail"
	Dir  string
	Addr string // its SMTP listener, host:port
	mta  mta
}

// mta is what differs between MTAs; Lab does the rest.
type mta interface {
	start(l *Lab, o Options) error
	stop(l *Lab)
	held(l *Lab) ([]Held, error)
	queued(l *Lab) (int, error)
	submit(l *Lab, from, to, message string) error
	log(l *Lab) string
}

// MTAs lists the kinds of lab.
var MTAs = []string{"postfix", "sendmail"}

// Available says why a lab of the named MTA cannot run here, or nil.
func Available(name string) error {
	if os.Geteuid() != 0 {
		return errors.New("starting an MTA instance needs root")
	}
	switch name {
	case "postfix":
		return postfixAvailable()
	case "sendmail":
		return sendmailAvailable()
	}
	return fmt.Errorf("no lab for %q", name)
}

// Start writes the named MTA's configuration and starts it.
func Start(name string, o Options) (*Lab, error) {
	if err := Available(name); err != nil {
		return nil, err
	}
	if o.Signer != "" && o.Milter == "" {
		return nil, errNoMilterForSigner
	}
	l := &Lab{Name: name, mta: &postfix{}}
	if name == "sendmail" {
		l.mta = &sendmail{}
	}
	var err error
	if l.Dir, err = os.MkdirTemp("", name+"lab-"); err != nil {
		return nil, err
	}
	os.Chmod(l.Dir, 0o755) // the MTA's unprivileged users walk into its queue below it
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	l.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	if err := l.mta.start(l, o); err != nil {
		l.Stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := waitListening(l.Addr, 30*time.Second); err != nil {
		l.Stop()
		return nil, fmt.Errorf("%s does not listen on %s: %w\n%s", name, l.Addr, err, l.Log())
	}
	return l, nil
}

// Stop stops the instance and removes its files.
func (l *Lab) Stop() {
	l.mta.stop(l)
	os.RemoveAll(l.Dir)
}

// Log is what the instance logged so far.
func (l *Lab) Log() string { return l.mta.log(l) }

// Held lists the messages the MTA holds.
func (l *Lab) Held() ([]Held, error) { return l.mta.held(l) }

// Queued counts the messages in the MTA's queues, held ones included:
// mail still queued when it should have reached a final state would loop.
func (l *Lab) Queued() (int, error) { return l.mta.queued(l) }

// Sendmail submits a message locally with the instance's sendmail(1), as
// cron jobs and web applications do.
func (l *Lab) Sendmail(from, to, message string) error { return l.mta.submit(l, from, to, message) }

// Drained waits until nothing is queued.
func (l *Lab) Drained(timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		n, err := l.Queued()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
	return fmt.Errorf("%s %s: the queue does not drain", l.Name, l.Addr)
}

// guard starts a process that runs stop, a shell command, when this
// process ends in any way (a signal, a timeout, a closed pipe; nothing runs
// a deferred Stop then): it waits for the end of a pipe only this process
// holds. PR_SET_PDEATHSIG would not do: an MTA changing its credentials
// loses it. release runs stop now and waits for it.
func guard(stop string) (release func(), err error) {
	cmd := exec.Command("sh", "-c", "cat >/dev/null; "+stop)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a ^C to the terminal's group must not end it first
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() { w.Close(); cmd.Wait() }, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// run runs a command of the lab and returns its output; a failure carries
// what it printed.
func run(cmd *exec.Cmd, stdin string) ([]byte, error) {
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", cmd.Args[0], err, strings.TrimSpace(string(out)))
	}
	return out, nil
}
