package mtalab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/configs"
)

// OpenDKIM is a running Debian opendkim that signs mail as a relay's DKIM
// signer does: a lab puts it before mxguard (Options.Signer), as
// configs/postfix/opendkim.cf and configs/sendmail/opendkim.mc do.
type OpenDKIM struct {
	// Socket is its milter socket, "inet:127.0.0.1:PORT".
	Socket string
	// Keys are the keys it signs with, their records filled in.
	Keys []SigningKey
	dir  string
	cmd  *exec.Cmd
	done chan error
}

// SigningKey is one key of a signer: mail whose From address is in
// Authors (default: Domain and its sub-domains) is signed with d=Domain,
// s=Selector and a key of Bits.
type SigningKey struct {
	Domain, Selector string
	Bits             int
	Authors          []string
	// Record is the key's TXT record, to publish at KeyName.
	Record string
}

// KeyName is where receivers look the key up.
func (k SigningKey) KeyName() string { return k.Selector + "._domainkey." + k.Domain }

// OpenDKIMAvailable says why no opendkim can run here, or nil.
func OpenDKIMAvailable() error {
	for _, bin := range []string{"opendkim", "opendkim-genkey"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install opendkim opendkim-tools)", bin)
		}
	}
	return nil
}

// StartOpenDKIM makes the keys and starts opendkim signing with them, set
// up as configs/opendkim/opendkim.conf says; without recipeSignHeaders it
// signs the fields OpenDKIM signs by default instead of the recipe's.
func StartOpenDKIM(recipeSignHeaders bool, keys ...SigningKey) (*OpenDKIM, error) {
	if err := OpenDKIMAvailable(); err != nil {
		return nil, err
	}
	// opendkim refuses files below a directory others may write to, as
	// /tmp is: /run is root's.
	dir, err := os.MkdirTemp("/run", "opendkimlab-")
	if err != nil {
		return nil, err
	}
	o := &OpenDKIM{dir: dir}
	var keyTable, signingTable strings.Builder
	for i, k := range keys {
		kdir := filepath.Join(dir, fmt.Sprintf("key%d", i))
		if err := os.Mkdir(kdir, 0o700); err != nil {
			o.Stop()
			return nil, err
		}
		if _, err := run(exec.Command("opendkim-genkey", "-b", fmt.Sprint(k.Bits), "-d", k.Domain, "-s", k.Selector, "-D", kdir), ""); err != nil {
			o.Stop()
			return nil, err
		}
		txt, err := os.ReadFile(filepath.Join(kdir, k.Selector+".txt"))
		if err != nil {
			o.Stop()
			return nil, err
		}
		k.Record = keyRecord(string(txt))
		fmt.Fprintf(&keyTable, "key%d %s:%s:%s\n", i, k.Domain, k.Selector, filepath.Join(kdir, k.Selector+".private"))
		authors := k.Authors
		if len(authors) == 0 {
			authors = []string{k.Domain, "*." + k.Domain}
		}
		for _, a := range authors {
			fmt.Fprintf(&signingTable, "*@%s key%d\n", a, i)
		}
		o.Keys = append(o.Keys, k)
	}
	for name, text := range map[string]string{"keytable": keyTable.String(), "signingtable": signingTable.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			o.Stop()
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		o.Stop()
		return nil, err
	}
	o.Socket = fmt.Sprintf("inet:127.0.0.1:%d", port)
	// The shipped recipe, on this lab's socket and files.
	conf := strings.NewReplacer(
		"inet:8892@127.0.0.1", fmt.Sprintf("inet:%d@127.0.0.1", port),
		"/etc/opendkim/keytable", filepath.Join(dir, "keytable"),
		"/etc/opendkim/signingtable", filepath.Join(dir, "signingtable"),
	).Replace(string(configs.OpenDKIMConf))
	if !recipeSignHeaders {
		conf = regexp.MustCompile(`(?m)^SignHeaders .*\n`).ReplaceAllString(conf, "")
	}
	conf += fmt.Sprintf("Syslog no\nLogWhy yes\nPidFile %s\n", filepath.Join(dir, "opendkim.pid"))
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
