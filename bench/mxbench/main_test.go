package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mxguard/mxguard/internal/testkit"
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

// TestInterrupted ends mxbench postfix while its seven Postfix masters run,
// as a user, a timeout or a closed pipe does, and sees nothing it started
// left running.
func TestInterrupted(t *testing.T) {
	if err := postfixNeeds(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it (.ci/run)", err)
		}
		t.Skip(err)
	}
	bin := filepath.Join(t.TempDir(), "mxbench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name string
		cmd  []string
		end  func(cmd *exec.Cmd, stderr io.Closer)
	}{
		{"SIGINT", []string{bin, "postfix", "-quick"}, func(cmd *exec.Cmd, _ io.Closer) { cmd.Process.Signal(os.Interrupt) }},
		// timeout(1) sends SIGTERM, here to the "go run" of the script.
		{"SIGTERM to go run", []string{"sh", "../postfix.sh", "-quick"}, func(cmd *exec.Cmd, _ io.Closer) { cmd.Process.Signal(syscall.SIGTERM) }},
		// Its next line of progress meets a closed pipe: SIGPIPE.
		{"closed pipe", []string{bin, "postfix", "-quick"}, func(_ *exec.Cmd, stderr io.Closer) { stderr.Close() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The labs' directories, and the processes' working directories;
			// not t.TempDir's: Postfix's services walk into their queues below it.
			labs, err := os.MkdirTemp("", "mxbench-interrupted-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(labs)
			os.Chmod(labs, 0o755)
			cmd := exec.Command(c.cmd[0], c.cmd[1:]...)
			cmd.Env = append(os.Environ(), "TMPDIR="+labs)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The first round's first line: all seven labs run.
			lines := bufio.NewScanner(stderr)
			for lines.Scan() && !strings.HasPrefix(lines.Text(), "round 1:") {
				t.Log(lines.Text())
			}
			if masters := running(labs, "master"); len(masters) != 7 {
				t.Errorf("Postfix masters running: %v, want 7", masters)
			}
			go io.Copy(io.Discard, stderr)
			c.end(cmd, stderr)
			cmd.Wait()
			var left []string
			defer func() {
				if t.Failed() {
					t.Logf("still running: %v", left)
				}
			}()
			testkit.WaitFor(t, "every process of the labs to end", func() bool {
				left = running(labs, "")
				return len(left) == 0
			})
		})
	}
}

// running lists the processes named comm ("" for any) whose working
// directory is under dir: Postfix's run in their queue directory.
func running(dir, comm string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cwd, err := os.Readlink(p + "/cwd")
		if err != nil || !strings.HasPrefix(cwd, dir+"/") {
			continue
		}
		name, _ := os.ReadFile(p + "/comm")
		if comm == "" || strings.TrimSpace(string(name)) == comm {
			found = append(found, filepath.Base(p)+" "+strings.TrimSpace(string(name)))
		}
	}
	return found
}
