package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/sandboxspec"
)

const exampleSpec = "../../configs/sandbox/example.yaml"

// The sandbox as a test suite in another language uses it: a built binary
// driven by a shell script that waits for its line, checks domains against
// it and stops it.
func TestSandboxScript(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on $PATH: %v", err)
	}
	// Upper bounds for a loaded machine, never reached when things work.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "mxguard")
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, "sh", "testdata/sandbox.sh", bin, exampleSpec)
	// On timeout the script goes with everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "PASS\n") {
		t.Fatalf("testdata/sandbox.sh: %v\n%s", err, out)
	}
}

// What a spec describes is what the servers do.
func TestSandboxServesTheSpec(t *testing.T) {
	long := strings.Repeat("x", 300)
	spec, err := sandboxspec.Parse("s.yaml", []byte(`negative_ttl: 30
zone:
  x.test:
    mx: [10 mx.x.test, 20 mx2.x.test]
    txt: [`+long+`]
    ttl: 1h
    fault: {a: servfail}
  mx.x.test: {a: 127.0.11.1, aaaa: "::1"}
  alias.x.test: {cname: mx.x.test}
  127.0.11.1: {ptr: mx.x.test}
  gone.x.test: {fault: refused}
smtp:
  127.0.11.1: accept
  127.0.11.2: closed
  127.0.11.3: {banner: "220-a\r\n220 b\r\n"}
`))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := startSandbox(spec, "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.close()
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg).SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 10 * time.Second}).Exchange(m, sb.dns.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask("x.test.", dns.TypeMX); len(r.Answer) != 2 || r.Answer[0].Header().Ttl != 3600 {
		t.Errorf("MX: %v", r)
	}
	if r := ask("x.test.", dns.TypeTXT); len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != long {
		t.Errorf("TXT: %v", r)
	}
	if r := ask("x.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("A with a fault: %v", r)
	}
	if r := ask("gone.x.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("a name with only a fault: %v", r)
	}
	if r := ask("mx.x.test.", dns.TypeAAAA); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
		t.Errorf("AAAA: %v", r)
	}
	if r := ask("alias.x.test.", dns.TypeA); len(r.Answer) != 2 {
		t.Errorf("CNAME: %v", r)
	}
	if r := ask("1.11.0.127.in-addr.arpa.", dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "mx.x.test." {
		t.Errorf("PTR: %v", r)
	}
	if r := ask("nx.test.", dns.TypeA); r.Rcode != dns.RcodeNameError || r.Ns[0].(*dns.SOA).Minttl != 30 {
		t.Errorf("NXDOMAIN: %v", r)
	}
	greeting := func(ip string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(int(sb.port))), 10*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for ip, want := range map[string]string{"127.0.11.1": "220 mx.sandbox.test", "127.0.11.2": "connection refused", "127.0.11.3": "220-a"} {
		if got := greeting(ip); !strings.Contains(got, want) {
			t.Errorf("%s greets %q, want %q", ip, got, want)
		}
	}
}

func TestSandboxUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "sandbox needs --spec FILE"},
		{[]string{"--spec", exampleSpec, "extra"}, "sandbox takes no arguments"},
		{[]string{"--spec", exampleSpec, "--dns", "192.0.2.1:53"}, "not a loopback address"},
		{[]string{"--spec", exampleSpec, "--dns", "localhost:53"}, `"localhost" is not an IP address`},
		{[]string{"--spec", exampleSpec, "--smtp-port", "0"}, "--smtp-port 0: must be 1-65535"},
		{[]string{"--spec", "testdata/no-such-spec.yaml"}, "cannot read testdata/no-such-spec.yaml"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"sandbox"}, tc.args...), nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.want) || stdout.Len() > 0 {
			t.Errorf("sandbox %q: exit %d, stdout %q, stderr %q; want 64 and %q", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("smtp:\n  192.0.2.25: accept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"sandbox", "--spec", bad}, nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), bad+":2: smtp: 192.0.2.25 is not a loopback address") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

// --config-out never overwrites a file: the sandbox removes it on exit.
func TestSandboxConfigOutMustBeNew(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(existing, []byte("# the operator's own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"sandbox", "--spec", exampleSpec, "--config-out", existing}, nil, &stdout, &stderr)
	if code != 1 || stdout.Len() > 0 || !strings.Contains(stderr.String(), "it must not exist") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if data, err := os.ReadFile(existing); err != nil || string(data) != "# the operator's own\n" {
		t.Errorf("the existing file is now %q, %v", data, err)
	}
}
