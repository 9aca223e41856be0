package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how far `check --file` is on a terminal: a bar with the
// count, the rate and the time left when the number of lines is known (a
// regular file), the count and the rate when it is not (a pipe).
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	began time.Time
}

// newProgress returns the progress display for a batch read from in, or nil
// when stderr is not a terminal (a log file or a CI job wants no bar) or
// the reports go to the same terminal (they show the progress themselves,
// and a bar redrawn between them would break their lines).
func newProgress(in io.Reader, stdout, stderr io.Writer) *progress {
	if !wantProgress(stdout, stderr) {
		return nil
	}
	total := -1
	if f, ok := in.(*os.File); ok {
		if n, ok := countTargets(f); ok {
			total = n
		}
	}
	return progressOf(total, stderr)
}

// newProgressOf is the progress display for total domains (-1: unknown).
func newProgressOf(total int, stdout, stderr io.Writer) *progress {
	if !wantProgress(stdout, stderr) {
		return nil
	}
	return progressOf(total, stderr)
}

func wantProgress(stdout, stderr io.Writer) bool {
	errFile, ok := unwrap(stderr).(*os.File)
	if !ok || !term.IsTerminal(int(errFile.Fd())) {
		return false
	}
	outFile, ok := unwrap(stdout).(*os.File)
	return !ok || !term.IsTerminal(int(outFile.Fd()))
}

func progressOf(total int, stderr io.Writer) *progress {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("checking"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("domains"),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
	}
	if total >= 0 {
		opts = append(opts, progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish())
	} else {
		opts = append(opts, progressbar.OptionSpinnerType(14))
	}
	return &progress{bar: progressbar.NewOptions(total, opts...), w: stderr, began: time.Now()}
}

// countTargets counts the lines `check` will read from a regular file, and
// goes back to where it was (stdin may be a file the shell has read from
// already). Anything else (a pipe, a terminal) cannot be read twice.
func countTargets(f *os.File) (int, bool) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, false
	}
	n := 0
	// The same reading as runBatch's, or the count would not match.
	sc := newTargetScanner(f)
	for sc.Scan() {
		if _, ok := target(sc.Text()); ok {
			n++
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil || sc.Err() != nil {
		return 0, false
	}
	return n, true
}

// done counts one checked domain.
func (p *progress) done() {
	if p != nil {
		p.bar.Add(1)
	}
}

// finish replaces the bar with a summary line.
func (p *progress) finish(count int) {
	if p == nil {
		return
	}
	p.bar.Finish()
	p.bar.Clear()
	took := time.Since(p.began)
	fmt.Fprintf(p.w, "\r%d domains checked in %s (%.1f/s)\n", count, took.Round(time.Millisecond), float64(count)/took.Seconds())
}
