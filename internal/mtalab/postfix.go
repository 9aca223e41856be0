package mtalab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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

type postfix struct {
	release func()        // stops master, also when this process ends (guard)
	done    chan struct{} // closed when master has exited
}

func postfixAvailable() error {
	if _, err := exec.LookPath("postfix"); err != nil {
		return errors.New("postfix is not installed (apt-get install postfix)")
	}
	return nil
}

func (p *postfix) start(l *Lab, o Options) error {
	_, port, _ := strings.Cut(l.Addr, ":")
	fill := strings.NewReplacer("{{LAB}}", l.Dir, "{{SMTPD}}", port)
	cf := fill.Replace(mainCf)
	if o.Relay != "" {
		host, port, _ := strings.Cut(o.Relay, ":")
		cf += fmt.Sprintf("relayhost = [%s]:%s\n", host, port)
	} else {
		cf += "relayhost =\ndefault_transport = discard:mtalab\n"
	}
	if o.Milter != "" {
		milters := string(configs.PostfixMainCf)
		if o.Signer != "" { // the signer's lines replace main.cf's list: it goes first
			milters = withoutMilterLists(milters) + string(configs.PostfixOpenDKIMCf)
		}
		cf += strings.NewReplacer("inet:127.0.0.1:8891", o.Milter, "inet:127.0.0.1:8892", o.Signer).Replace(milters)
	}
	if o.PolicyService != "" {
		cf += strings.ReplaceAll(string(configs.PostfixPolicyCf), "inet:127.0.0.1:10040", o.PolicyService)
	}
	os.MkdirAll(postfixEtc(l), 0o755)
	os.MkdirAll(filepath.Join(l.Dir, "spool"), 0o755) // postfix check fills it in, with the right owners
	if err := os.WriteFile(filepath.Join(postfixEtc(l), "main.cf"), []byte(cf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(postfixEtc(l), "master.cf"), []byte(fill.Replace(masterCf)), 0o644); err != nil {
		return err
	}
	if _, err := run(exec.Command("postfix", "-c", postfixEtc(l), "check"), ""); err != nil {
		return err
	}
	// master(8) runs as this process's child, not detached as "postfix
	// start" leaves it, so that Stop can wait until it and its services
	// have gone.
	dir, err := run(exec.Command("postconf", "-c", postfixEtc(l), "-h", "daemon_directory"), "")
	if err != nil {
		return err
	}
	if p.release, err = guard("exec postfix -c '" + postfixEtc(l) + "' stop"); err != nil {
		return err
	}
	master := exec.Command(filepath.Join(strings.TrimSpace(string(dir)), "master"), "-c", postfixEtc(l))
	if err := master.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { master.Wait(); close(p.done) }()
	return nil
}

// withoutMilterLists is a main.cf snippet without its smtpd_milters and
// non_smtpd_milters lines.
func withoutMilterLists(cf string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(cf, "\n") {
		if !strings.HasPrefix(line, "smtpd_milters") && !strings.HasPrefix(line, "non_smtpd_milters") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func postfixEtc(l *Lab) string { return filepath.Join(l.Dir, "etc") }

func (p *postfix) stop(l *Lab) {
	if p.release != nil {
		p.release()
	}
	if p.done != nil {
		<-p.done // master has stopped its services
	}
}

func (*postfix) log(l *Lab) string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, "maillog"))
	return string(b)
}

func (*postfix) submit(l *Lab, from, to, message string) error {
	_, err := run(exec.Command("sendmail", "-C", postfixEtc(l), "-f", from, "--", to), message)
	return err
}

// queueEntry is one line of postqueue -j.
type queueEntry struct {
	Queue string `json:"queue_name"`
	ID    string `json:"queue_id"`
}

func postfixQueue(l *Lab) ([]queueEntry, error) {
	out, err := exec.Command("postqueue", "-c", postfixEtc(l), "-j").Output()
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

func (*postfix) held(l *Lab) ([]Held, error) {
	q, err := postfixQueue(l)
	var held []Held
	for _, e := range q {
		if e.Queue == "hold" {
			held = append(held, Held{ID: e.ID})
		}
	}
	return held, err
}

func (*postfix) queued(l *Lab) (int, error) {
	q, err := postfixQueue(l)
	return len(q), err
}
