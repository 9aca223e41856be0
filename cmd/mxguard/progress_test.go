package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/internal/spectest"
)

// openPTY returns a pseudo-terminal pair: what a program writes to tty can
// be read from ptmx.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatal(err)
	}
	return ptmx, tty
}

// runOnTerminal runs mxguard with stderr on a terminal and stdout on a pipe,
// as `mxguard check --file big.txt > reports.json` in a shell does; or with
// both on the terminal when bothOnTerminal.
func runOnTerminal(t *testing.T, stdin io.Reader, bothOnTerminal bool, args ...string) (stdout, terminal string) {
	t.Helper()
	ptmx, tty := openPTY(t)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MXGUARD_RUN_MAIN=1")
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, tty
	if bothOnTerminal {
		cmd.Stdout = tty
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child holds it now; its exit ends the terminal's output
	var screen bytes.Buffer
	_, err := io.Copy(&screen, ptmx)
	if err != nil && !errors.Is(err, syscall.EIO) { // EIO: the last writer closed the terminal
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return out.String(), screen.String()
}

func TestCheckFileShowsProgressOnATerminal(t *testing.T) {
	sb := spectest.Sandbox(t)
	var list strings.Builder
	const n = 60
	for i := 0; i < n; i++ {
		fmt.Fprintf(&list, "user%d@ok.test\n", i)
	}
	list.WriteString("\n# a comment, not a domain\n")
	file := filepath.Join(t.TempDir(), "domains.txt")
	writeFile(t, file, list.String())
	args := append([]string{"check", "--json", "--file", file}, sandboxFlags(t, sb)...)

	stdout, screen := runOnTerminal(t, nil, false, args...)
	if lines := parseLines(t, stdout); len(lines) != n {
		t.Errorf("%d reports on stdout, want %d", len(lines), n)
	}
	// The bar knows the total from the file: count, rate, elapsed and time
	// left ("[1s:2s]"), then a summary line.
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\(\d+/60, [0-9.]+ domains/s\)`),
		regexp.MustCompile(`\[\d+s:\d+s\]`),
		regexp.MustCompile(`60 domains checked in [0-9.]+m?s \([0-9.]+/s\)\r?\n`),
	} {
		if !want.MatchString(screen) {
			t.Errorf("the terminal lacks %s:\n%q", want, screen)
		}
	}

	// From a pipe the total is unknown: a count and a rate, no ETA.
	fromStdin := append(args[:3:3], append([]string{"-"}, args[4:]...)...)
	stdout, screen = runOnTerminal(t, strings.NewReader(list.String()), false, fromStdin...)
	if lines := parseLines(t, stdout); len(lines) != n {
		t.Errorf("stdin: %d reports on stdout, want %d", len(lines), n)
	}
	if !strings.Contains(screen, "60 domains checked in") {
		t.Errorf("stdin: no summary on the terminal:\n%q", screen)
	}

	// Stdin a file the shell has read from already ({ read header;
	// mxguard check --file -; } < list): counting the lines leaves it
	// where it was.
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(int64(len("user0@ok.test\n")), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	stdout, screen = runOnTerminal(t, f, false, fromStdin...)
	if lines := parseLines(t, stdout); len(lines) != n-1 || lines[0].Domain != "ok.test" {
		t.Errorf("stdin at line 2: %d reports, want %d", len(lines), n-1)
	}
	if !regexp.MustCompile(`\(\d+/59, `).MatchString(screen) {
		t.Errorf("stdin at line 2: the bar does not count the 59 lines left:\n%q", screen)
	}

	// Reports on the same terminal show the progress themselves: no bar
	// between their lines.
	_, screen = runOnTerminal(t, nil, true, args...)
	if strings.Count(screen, `"domain":"ok.test"`) != n || strings.Contains(screen, "domains/s") {
		t.Errorf("stdout on the terminal: want %d reports and no bar:\n%q", n, screen)
	}
}

// Off a terminal nothing but reports is printed, on either stream.
func TestCheckFileQuietOffATerminal(t *testing.T) {
	sb := spectest.Sandbox(t)
	file := filepath.Join(t.TempDir(), "domains.txt")
	writeFile(t, file, "a@ok.test\nb@ok.test\n")
	code, stdout, stderr := runCLI(t, "", append([]string{"check", "--json", "--file", file}, sandboxFlags(t, sb)...)...)
	if code != exitPass || len(parseLines(t, stdout)) != 2 || stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
