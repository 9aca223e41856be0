package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// messageSandbox is the check-table sandbox with author.test, which passes
// every domain check and signs with the returned signer, and other.test.
func messageSandbox(t *testing.T) (*smtptest.Sandbox, *smtptest.DKIMSigner) {
	t.Helper()
	sb := spectest.Sandbox(t)
	s, err := smtptest.NewDKIMSigner("author.test", "cli", 2048)
	if err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("author.test", 10, "mx.accept.test").MX("other.test", 10, "mx.accept.test").DKIMKey(s)
	spectest.PassingExcept(sb.Zone, policy.DMARCRecord, "author.test")
	sb.Zone.TXT("_dmarc.author.test", "v=DMARC1; p=reject")
	spectest.Passing(sb.Zone, "other.test")
	return sb, s
}

const savedMessage = "Return-Path: <bounce@other.test>\r\nFrom: A <a@author.test>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"

// Support staff paste a bounced message and see why it bounced.
func TestCheckMessage(t *testing.T) {
	sb, s := messageSandbox(t)
	signed, err := s.Sign(savedMessage)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "bounced.eml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(savedMessage, "\r\n", "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := sandboxFlags(t, sb)

	// Unsigned, sent with another envelope domain: DMARC fails, and the
	// author domain gets its own report.
	code, out, errOut := runCLI(t, "", append([]string{"check", "--json", "--message", file}, flags...)...)
	lines := parseLines(t, out)
	if code != exitFlag || len(lines) != 2 {
		t.Fatalf("exit %d, %d reports:\n%s%s", code, len(lines), out, errOut)
	}
	if l := lines[0]; l.Domain != "other.test" || l.Verdict != "flag" || findings(l.Checks) != "dkim.signature=fail dmarc.alignment=fail" {
		t.Errorf("envelope report: %s %s %s", l.Domain, l.Verdict, findings(l.Checks))
	}
	if a := lines[0].check(policy.DMARCAlignment); !strings.Contains(a.Detail, "author.test publishes p=reject") {
		t.Errorf("dmarc.alignment: %s", a.Detail)
	}
	if l := lines[1]; l.Domain != "author.test" || l.Verdict != "pass" {
		t.Errorf("author report: %s %s %s", l.Domain, l.Verdict, findings(l.Checks))
	}

	// Signed, from stdin, with the envelope given: it passes.
	code, out, errOut = runCLI(t, signed, append([]string{"check", "--json", "--message", "-", "--mail-from", "a@author.test"}, flags...)...)
	lines = parseLines(t, out)
	if code != exitPass || len(lines) != 1 || findings(lines[0].Checks) != "" {
		t.Errorf("signed message: exit %d\n%s%s", code, out, errOut)
	}

	// A Return-Path with the root dot is the envelope all the same.
	rooted := filepath.Join(dir, "rooted.eml")
	if err := os.WriteFile(rooted, []byte(strings.Replace(savedMessage, "<bounce@other.test>", "<bounce@other.test.>", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runCLI(t, "", append([]string{"check", "--json", "--message", rooted}, flags...)...)
	if lines = parseLines(t, out); lines[0].Domain != "other.test" {
		t.Errorf("envelope of a rooted Return-Path: %s", lines[0].Domain)
	}

	// The human report names the checks and what to fix.
	code, out, _ = runCLI(t, "", append([]string{"check", "--message", file}, flags...)...)
	if code != exitFlag || !strings.Contains(out, "dkim.signature") || !strings.Contains(out, "Sign with d=author.test") {
		t.Errorf("human report, exit %d:\n%s", code, out)
	}
}

func TestCheckMessageUsageErrors(t *testing.T) {
	noEnvelope := filepath.Join(t.TempDir(), "m.eml")
	if err := os.WriteFile(noEnvelope, []byte("Subject: x\n\nbody\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--message", "m.eml", "example.com"}, "--message checks one message"},
		{[]string{"--mail-from", "a@example.com", "example.com"}, "--mail-from is the envelope of --message"},
		{[]string{"--message", filepath.Join(t.TempDir(), "missing.eml")}, "no such file"},
		{[]string{"--message", noEnvelope}, "give the envelope sender with --mail-from"},
	} {
		code, _, errOut := runCLI(t, "", append([]string{"check"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %q; want %q", c.args, code, errOut, c.want)
		}
	}
}

func (l reportLine) check(id policy.CheckID) policy.Result {
	for _, c := range l.Checks {
		if c.ID == id {
			return c
		}
	}
	return policy.Result{}
}

// findings lists the non-pass, non-skip results as id=status.
func findings(results []policy.Result) string {
	var parts []string
	for _, r := range results {
		if r.Finding() {
			parts = append(parts, string(r.ID)+"="+r.Status.String())
		}
	}
	return strings.Join(parts, " ")
}
