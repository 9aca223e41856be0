package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/testkit"
)

// go-milter writes a line for every connection it gives up on: a peer's
// flood of broken connections must not become a flood of log lines.
func TestGoMilterLinesAreThrottled(t *testing.T) {
	out := &testkit.SyncBuffer{}
	w := newSlogWriter(slog.New(slog.NewTextHandler(out, nil)))
	for i := range 1000 {
		fmt.Fprintf(w, "Error reading milter command: read tcp 127.0.0.1:8891->127.0.0.1:%d: connection reset by peer\n", 40000+i)
	}
	fmt.Fprintf(w, "Unknown command: X\n")
	if n := strings.Count(out.String(), "Error reading milter command"); n != 1 {
		t.Errorf("%d lines for 1000 broken connections in a minute, want 1", n)
	}
	if !strings.Contains(out.String(), "Unknown command") {
		t.Errorf("another kind of line was held back:\n%s", out)
	}
}
