package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// buildMxguard builds the mxguard binary into dir, for the benchmarks
// that run it as a hosting provider does.
func buildMxguard(dir string) (string, error) {
	bin := filepath.Join(dir, "mxguard")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/mxguard/mxguard/cmd/mxguard").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building mxguard (run inside the repository): %v: %s", err, out)
	}
	return bin, nil
}

// runReports runs an mxguard command that prints one JSON report per
// line (check --json, audit --json), as a child that ends with mxbench,
// and counts the reports and those that pass. An exit status below 64
// is a verdict, not a failure.
func runReports(bin string, args ...string) (took time.Duration, reports, passed int, err error) {
	cmd := childOf(exec.Command(bin, args...))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	began := time.Now()
	err = cmd.Run()
	took = time.Since(began)
	if exit, ok := err.(*exec.ExitError); err != nil && !(ok && exit.ExitCode() < 64) {
		return took, 0, 0, fmt.Errorf("mxguard %s: %v", args[0], err)
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r struct{ Verdict string }
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			reports++
			if r.Verdict == "pass" {
				passed++
			}
		}
	}
	return took, reports, passed, nil
}
