package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The memory benchmark serves its zone from a child process: this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "zone-server" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestQuick runs every benchmark with -quick: a benchmark whose sanity
// checks fail here would report figures about something else.
func TestQuick(t *testing.T) {
	for _, b := range benches {
		t.Run(b.name, func(t *testing.T) {
			if b.needs != nil {
				if err := b.needs(); err != nil {
					if os.Getenv("CI") != "" {
						t.Fatalf("%v; CI must provide it (.ci/run)", err)
					}
					t.Skip(err)
				}
			}
			rows, err := b.run(flag.NewFlagSet(b.name, flag.ContinueOnError), []string{"-quick"})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				t.Logf("%s | %s | %s", r.metric, r.value, r.goal)
				if r.broken {
					t.Errorf("sanity check failed: %s: %s, want %s", r.metric, r.value, r.goal)
				}
			}
		})
	}
}

// TestScripts: every benchmark has its bench/NAME.sh, which hands its flags
// to mxbench NAME, -quick included.
func TestScripts(t *testing.T) {
	scripts, _ := filepath.Glob("../*.sh")
	var names []string
	for _, s := range scripts {
		names = append(names, strings.TrimSuffix(filepath.Base(s), ".sh"))
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`exec go run ./bench/mxbench %s "$@"`, names[len(names)-1])
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not %s", s, want)
		}
	}
	for _, b := range benches {
		if !slices.Contains(names, b.name) {
			t.Errorf("no bench/%s.sh", b.name)
		}
	}
	out, err := exec.Command("sh", "../cold.sh", "-quick").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cold decisions that passed") {
		t.Errorf("sh bench/cold.sh -quick: %v\n%s", err, out)
	}
}
