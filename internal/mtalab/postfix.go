// Package postfixlab runs a private Postfix instance on loopback (Debian's
// postfix package; no system instance is touched), for mxguard's end-to-end
// tests and benchmarks. Its milter settings are configs/postfix/main.cf, as
// operators use them.
package postfixlab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/configs"
)

const mainCf = `compatibility_level = 3.6
queue_directory = {{LAB}}/spool
data_directory = {{LAB}}/data
myhostname = mta.lab.test
mydomain = lab.test
myorigin = $myhostname
mydestination =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
syslog_name = postfixlab
maillog_file = {{LAB}}/maillog
maillog_file_prefixes = {{LAB}}
biff = no
default_process_limit = 200
`

const masterCf = `127.0.0.1:{{SMTPD}} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000    0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// Options say what a lab does with mail.
type Options struct {
	// Milter is the milter socket ("inet:127.0.0.1:8891"), or "" for none.
	Milter string
	// RelayPort is where mail goes on ([127.0.0.1]:port); 0 discards it
	// (default_transport = discard:), to measure smtpd and the milter alone.
	RelayPort int
}

// Lab is a running instance. Every service runs unchrooted, as root starts it.
type Lab struct {
	Dir  string
	Addr string // its smtpd, host:port
}

// Available says why a lab cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath("postfix"); err != nil {
		return errors.New("postfix is not installed (apt-get install postfix)")
	}
	if os.Geteuid() != 0 {
		return errors.New("starting a Postfix instance needs root")
	}
	return nil
}

// Start writes the instance's configuration and starts it.
func Start(o Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "postfixlab-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755) // the postfix user walks into the queue below it
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	l := &Lab{Dir: dir, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	fill := strings.NewReplacer("{{LAB}}", dir, "{{SMTPD}}", strconv.Itoa(port))
	cf := fill.Replace(mainCf)
	if o.RelayPort != 0 {
		cf += fmt.Sprintf("relayhost = [127.0.0.1]:%d\n", o.RelayPort)
	} else {
		cf += "relayhost =\ndefault_transport = discard:postfixlab\n"
	}
	if o.Milter != "" {
		cf += strings.ReplaceAll(string(configs.PostfixMainCf), "inet:127.0.0.1:8891", o.Milter)
	}
	os.MkdirAll(l.etc(), 0o755)
	os.MkdirAll(filepath.Join(dir, "spool"), 0o755) // postfix check fills it in, with the right owners
	if err := os.WriteFile(filepath.Join(l.etc(), "main.cf"), []byte(cf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.etc(), "master.cf"), []byte(fill.Replace(masterCf)), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"check"}, {"start"}} {
		if out, err := l.postfix(args...); err != nil {
			l.Stop()
			return nil, fmt.Errorf("postfix %s: %v: %s", args[0], err, out)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", l.Addr, time.Second)
		if err == nil {
			c.Close()
			return l, nil
		}
		if time.Now().After(deadline) {
			l.Stop()
			return nil, fmt.Errorf("postfix does not listen on %s: %w", l.Addr, err)
		}
	}
}

func (l *Lab) etc() string { return filepath.Join(l.Dir, "etc") }

func (l *Lab) postfix(args ...string) ([]byte, error) {
	return exec.Command("postfix", append([]string{"-c", l.etc()}, args...)...).CombinedOutput()
}

// Stop stops the instance and removes its files.
func (l *Lab) Stop() {
	l.postfix("stop")
	os.RemoveAll(l.Dir)
}

// Log is the instance's mail log so far.
func (l *Lab) Log() string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, "maillog"))
	return string(b)
}

// Sendmail submits a message locally with the instance's sendmail(1), as
// cron jobs and web applications do: it goes through postdrop and pickup,
// and so through non_smtpd_milters.
func (l *Lab) Sendmail(from, to, message string) error {
	cmd := exec.Command("sendmail", "-C", l.etc(), "-f", from, "--", to)
	cmd.Stdin = strings.NewReader(message)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sendmail: %v: %s", err, out)
	}
	return nil
}

// Queued counts the messages in each queue (maildrop, incoming, active,
// deferred, hold).
func (l *Lab) Queued() (map[string]int, error) {
	q, err := l.queue()
	n := map[string]int{}
	for _, e := range q {
		n[e.Queue]++
	}
	return n, err
}

// queueEntry is one line of postqueue -j.
type queueEntry struct {
	Queue string `json:"queue_name"`
	ID    string `json:"queue_id"`
}

func (l *Lab) queue() ([]queueEntry, error) {
	out, err := exec.Command("postqueue", "-c", l.etc(), "-j").Output()
	if err != nil {
		return nil, fmt.Errorf("postqueue: %w", err)
	}
	var q []queueEntry
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var e queueEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			q = append(q, e)
		}
	}
	return q, nil
}

// Held lists the queue IDs in the hold queue.
func (l *Lab) Held() ([]string, error) {
	q, err := l.queue()
	var ids []string
	for _, e := range q {
		if e.Queue == "hold" {
			ids = append(ids, e.ID)
		}
	}
	return ids, err
}

// Drained waits until the queue is empty.
func (l *Lab) Drained(timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		q, err := l.queue()
		if err != nil {
			return err
		}
		if len(q) == 0 {
			return nil
		}
	}
	return fmt.Errorf("postfix %s: the queue does not drain", l.Addr)
}
