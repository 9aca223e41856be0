package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
)

// miltertest (Debian's, built on libmilter's protocol code) is a third
// milter client, independent of go-milter and the MTAs: it plays the
// script in configs/miltertest against mxguard serving the sandbox.
func TestMiltertest(t *testing.T) {
	bin, err := exec.LookPath("miltertest")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("miltertest is not installed; CI must provide it (.ci/run)")
		}
		t.Skip("miltertest is not installed (apt-get install miltertest)")
	}
	sb := spectest.Sandbox(t)
	port := freeTCPPort(t)
	cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, cfg, sandboxConfig(sb, fmt.Sprintf("inet:127.0.0.1:%d", port), freeTCPPort(t), "policy:\n  actions:\n    mx.targets: hold\n"))
	startDaemon(t, cfg, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	script, err := filepath.Abs("../../configs/miltertest/mxguard.lua")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-D", fmt.Sprintf("socket=inet:%d@127.0.0.1", port), "-s", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pass, defer and hold as expected") {
		t.Fatalf("miltertest: %v\n%s", err, out)
	}
}
