package mtalab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// OpenDKIM is a running Debian opendkim that signs the mail of one domain,
// as a relay's DKIM signer does: a lab puts it before mxguard
// (Options.Signer), as configs/postfix/opendkim.cf and
// configs/sendmail/opendkim.mc do.
type OpenDKIM struct {
	// Socket is its milter socket, "inet:127.0.0.1:PORT".
	Socket string
	// Record is the selector's key record, to publish as TXT at
	// Selector._domainkey.Domain.
	Record   string
	Domain   string
	Selector string
	dir      string
	cmd      *exec.Cmd
	done     chan error
}

// OpenDKIMAvailable says why no opendkim can run here, or nil.
func OpenDKIMAvailable() error {
	for _, bin := range []string{"opendkim", "opendkim-genkey"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install opendkim opendkim-tools)", bin)
		}
	}
	return nil
}

// StartOpenDKIM makes a key of bits for selector and starts opendkim
// signing domain's mail (and its subdomains') with it.
func StartOpenDKIM(domain, selector string, bits int) (*OpenDKIM, error) {
	if err := OpenDKIMAvailable(); err != nil {
		return nil, err
	}
	// opendkim refuses files below a directory others may write to, as
	// /tmp is: /run is root's.
	dir, err := os.MkdirTemp("/run", "opendkimlab-")
	if err != nil {
		return nil, err
	}
	o := &OpenDKIM{Domain: domain, Selector: selector, dir: dir}
	if _, err := run(exec.Command("opendkim-genkey", "-b", fmt.Sprint(bits), "-d", domain, "-s", selector, "-D", dir), ""); err != nil {
		o.Stop()
		return nil, err
	}
	txt, err := os.ReadFile(filepath.Join(dir, selector+".txt"))
	if err != nil {
		o.Stop()
		return nil, err
	}
	o.Record = keyRecord(string(txt))
	port, err := freePort()
	if err != nil {
		o.Stop()
		return nil, err
	}
	o.Socket = fmt.Sprintf("inet:127.0.0.1:%d", port)
	conf := fmt.Sprintf(`Mode s
Domain %s
SubDomains yes
Selector %s
KeyFile %s
Socket inet:%d@127.0.0.1
Syslog no
LogWhy yes
Canonicalization relaxed/simple
InternalHosts 127.0.0.0/8
PidFile %s
`, domain, selector, filepath.Join(dir, selector+".private"), port, filepath.Join(dir, "opendkim.pid"))
	confPath := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		o.Stop()
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "opendkim.log"))
	if err != nil {
		o.Stop()
		return nil, err
	}
	defer logFile.Close()
	o.cmd = exec.Command("opendkim", "-f", "-x", confPath)
	o.cmd.Stdout, o.cmd.Stderr = logFile, logFile
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := o.cmd.Start(); err != nil {
		o.Stop()
		return nil, err
	}
	o.done = make(chan error, 1)
	go func() { o.done <- o.cmd.Wait() }()
	if err := waitListening(fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second); err != nil {
		log := o.Log()
		o.Stop()
		return nil, fmt.Errorf("opendkim does not listen: %w\n%s", err, log)
	}
	return o, nil
}

// keyRecord joins the quoted strings of opendkim-genkey's zone file line
// into the TXT record's text.
func keyRecord(zoneLine string) string {
	var b strings.Builder
	for rest := zoneLine; ; {
		i := strings.IndexByte(rest, '"')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i+1:], '"')
		if j < 0 {
			break
		}
		b.WriteString(rest[i+1 : i+1+j])
		rest = rest[i+j+2:]
	}
	return b.String()
}

// Log is what opendkim wrote.
func (o *OpenDKIM) Log() string {
	b, _ := os.ReadFile(filepath.Join(o.dir, "opendkim.log"))
	return string(b)
}

// Stop stops opendkim and removes its key.
func (o *OpenDKIM) Stop() {
	if o.cmd != nil && o.cmd.Process != nil {
		syscall.Kill(-o.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-o.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-o.cmd.Process.Pid, syscall.SIGKILL)
			<-o.done
		}
	}
	os.RemoveAll(o.dir)
}

var errNoMilterForSigner = errors.New("a signer goes before mxguard's milter: set Options.Milter too")
