package mtalab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mxguard/mxguard/configs"
)

// SendmailRoot is where Debian's sendmail-bin, sendmail-cf, sendmail-base,
// m4 and libwrap0 are unpacked (dpkg -x): they conflict with Postfix as
// installed packages. MXGUARD_SENDMAIL_ROOT overrides it.
// internal/mtalab/unpack-sendmail.sh fills it in.
func SendmailRoot() string {
	if r := os.Getenv("MXGUARD_SENDMAIL_ROOT"); r != "" {
		return r
	}
	return "/opt/mxguard-sendmail"
}

// The unpacked files a lab uses.
const (
	sendmailBin = "usr/libexec/sendmail/sendmail"
	m4Bin       = "usr/bin/m4"
	cfDir       = "usr/share/sendmail/cf/"
	libDir      = "usr/lib/x86_64-linux-gnu"
)

func sendmailAvailable() error {
	root := SendmailRoot()
	for _, f := range []string{sendmailBin, m4Bin, cfDir + "m4/cf.m4", libDir + "/libwrap.so.0"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			return fmt.Errorf("Debian's Sendmail is not unpacked in %s (sh internal/mtalab/unpack-sendmail.sh %s): %v", root, root, err)
		}
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return errors.New("unshare (util-linux) is needed to give Sendmail a host name of its own")
	}
	return nil
}

// labMc is the instance's sendmail.mc. Sendmail treats 127.0.0.1 as
// itself, so the relay is on another loopback address.
const labMc = `divert(-1)
divert(0)dnl
OSTYPE(` + "`linux'" + `)dnl
define(` + "`QUEUE_DIR', `{{LAB}}/mqueue'" + `)dnl
define(` + "`STATUS_FILE', `{{LAB}}/statistics'" + `)dnl
define(` + "`confPID_FILE', `{{LAB}}/sendmail.pid'" + `)dnl
undefine(` + "`ALIAS_FILE'" + `)dnl
undefine(` + "`HELP_FILE'" + `)dnl
define(` + "`confDEF_USER_ID', `8:8'" + `)dnl
define(` + "`confSERVICE_SWITCH_FILE', `{{LAB}}/service.switch'" + `)dnl
define(` + "`SMART_HOST', `[{{RELAYHOST}}]'" + `)dnl
define(` + "`RELAY_MAILER_ARGS', `TCP $h {{RELAYPORT}}'" + `)dnl
define(` + "`ESMTP_MAILER_ARGS', `TCP $h {{RELAYPORT}}'" + `)dnl
FEATURE(` + "`nocanonify'" + `)dnl
FEATURE(` + "`promiscuous_relay'" + `)dnl
FEATURE(` + "`accept_unresolvable_domains'" + `)dnl
FEATURE(` + "`accept_unqualified_senders'" + `)dnl
FEATURE(` + "`no_default_msa'" + `)dnl
DAEMON_OPTIONS(` + "`Port={{PORT}}, Addr=127.0.0.1, Name=MTA'" + `)dnl
{{MILTER}}MAILER(` + "`smtp'" + `)dnl
`

// sendmail runs `sendmail -bD` in the foreground.
type sendmail struct {
	cmd     *exec.Cmd
	done    chan error
	release func() // stops it, also when this process ends (guard)
}

func (s *sendmail) bin(l *Lab) string { return filepath.Join(l.Dir, "sendmail") }
func (s *sendmail) cf(l *Lab) string  { return filepath.Join(l.Dir, "sendmail.cf") }

func (s *sendmail) start(l *Lab, o Options) error {
	if o.Relay == "" || o.PolicyService != "" {
		return errors.New("a Sendmail lab needs a relay, and has no policy service")
	}
	root := SendmailRoot()
	// A copy without the setgid bit, so that the loader honours
	// LD_LIBRARY_PATH (libwrap comes from the unpacked root).
	bin, err := os.ReadFile(filepath.Join(root, sendmailBin))
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.bin(l), bin, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(l.Dir, "mqueue"), 0o700); err != nil {
		return err
	}
	// Host names from files only: the lab's clients have no reverse DNS the
	// system resolver could find, and each lookup would wait for it.
	if err := os.WriteFile(filepath.Join(l.Dir, "service.switch"), []byte("hosts files\naliases files\n"), 0o644); err != nil {
		return err
	}
	relayHost, relayPort, _ := strings.Cut(o.Relay, ":")
	_, port, _ := strings.Cut(l.Addr, ":")
	milter := ""
	if o.Milter != "" {
		// The operators' snippet, pointed at this milter socket.
		host, mport, _ := strings.Cut(strings.TrimPrefix(o.Milter, "inet:"), ":")
		snippet := strings.ReplaceAll(string(configs.SendmailMc), "inet:8891@127.0.0.1", fmt.Sprintf("inet:%s@%s", mport, host))
		path := filepath.Join(l.Dir, "mxguard.mc")
		if err := os.WriteFile(path, []byte(snippet), 0o644); err != nil {
			return err
		}
		milter = "include(`" + path + "')dnl\n"
	}
	if o.Signer != "" { // the signer's filter is defined, and so called, first
		host, sport, _ := strings.Cut(strings.TrimPrefix(o.Signer, "inet:"), ":")
		snippet := strings.ReplaceAll(string(configs.SendmailOpenDKIMMc), "inet:8892@127.0.0.1", fmt.Sprintf("inet:%s@%s", sport, host))
		path := filepath.Join(l.Dir, "opendkim.mc")
		if err := os.WriteFile(path, []byte(snippet), 0o644); err != nil {
			return err
		}
		milter = "include(`" + path + "')dnl\n" + milter
	}
	mc := strings.NewReplacer("{{LAB}}", l.Dir, "{{RELAYHOST}}", relayHost, "{{RELAYPORT}}", relayPort,
		"{{PORT}}", port, "{{MILTER}}", milter).Replace(labMc)
	m4 := exec.Command(filepath.Join(root, m4Bin), "-D_CF_DIR_="+filepath.Join(root, cfDir)+"/", filepath.Join(root, cfDir, "m4/cf.m4"), "-")
	m4.Stdin = strings.NewReader(mc)
	cf, err := m4.Output()
	if err != nil {
		return fmt.Errorf("m4: %w", err)
	}
	if err := os.WriteFile(s.cf(l), cf, 0o644); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(l.Dir, "sendmail.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	s.cmd = s.command(l, "-bD", "-q30s")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children go with it
	if err := s.cmd.Start(); err != nil {
		return err
	}
	if s.release, err = guard(fmt.Sprintf("kill -TERM -%d", s.cmd.Process.Pid)); err != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		s.cmd.Wait()
		s.cmd = nil
		return err
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	return nil
}

func (s *sendmail) env() []string {
	return append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(SendmailRoot(), libDir))
}

func (s *sendmail) stop(l *Lab) {
	if s.cmd == nil {
		return
	}
	s.release()
	<-s.done
}

func (s *sendmail) log(l *Lab) string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, "sendmail.log"))
	return string(b)
}

// command runs the instance's sendmail binary with its configuration, in
// a UTS namespace with a dotted host name: every invocation, the daemon's
// and mailq's alike, waits 60 s for a host name it cannot qualify.
func (s *sendmail) command(l *Lab, args ...string) *exec.Cmd {
	cmd := exec.Command("unshare", append([]string{"-u", "sh", "-c", `hostname mta.lab.test && exec "$0" "$@"`,
		s.bin(l), "-C", s.cf(l)}, args...)...)
	cmd.Env = s.env()
	return cmd
}

func (s *sendmail) submit(l *Lab, from, to, message string) error {
	_, err := run(s.command(l, "-f", from, "--", to), message)
	return err
}

// listQueue parses `mailq` output: a line per message that starts with its
// queue ID, followed by indented lines, QUARANTINE: among them.
func (s *sendmail) listQueue(l *Lab, args ...string) ([]Held, error) {
	out, err := run(s.command(l, append([]string{"-bp"}, args...)...), "")
	if err != nil {
		return nil, err
	}
	var msgs []Held
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
		case strings.HasPrefix(strings.TrimSpace(line), "QUARANTINE:") && len(msgs) > 0:
			msgs[len(msgs)-1].Reason = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "QUARANTINE:"))
		case line[0] != ' ' && line[0] != '\t' && line[0] != '-' && !strings.Contains(line, "requests") &&
			!strings.Contains(line, "is empty"):
			msgs = append(msgs, Held{ID: strings.TrimSuffix(fields[0], "*")})
		}
	}
	return msgs, sc.Err()
}

func (s *sendmail) held(l *Lab) ([]Held, error) { return s.listQueue(l, "-qQ") }

func (s *sendmail) queued(l *Lab) (int, error) {
	queued, err := s.listQueue(l)
	if err != nil {
		return 0, err
	}
	held, err := s.held(l)
	return len(queued) + len(held), err
}
