package milter_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/peertest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
)

func TestMain(m *testing.M) { peertest.Main(m) }

// crowd is the size of the floods below: every session slot.
const crowd = 1024

// served plays one well-behaved MTA transaction and fails the test unless
// it is accepted within a second. The domain was decided before, so the
// second is the front end's alone.
func (h *harness) servedWithinASecond(t *testing.T) {
	t.Helper()
	began := time.Now()
	r := h.play(t, goodConn(message("a@ok.test")))[0]
	if took := time.Since(began); !r.Accepted() || took > time.Second {
		t.Fatalf("the MTA's session: accepted %v after %v, want accepted within 1s", r.Accepted(), took)
	}
}

// A local user that is not the MTA's cannot take sessions: 1,024
// connections from another user that negotiate, send MAIL and go silent
// are refused before they take a slot, logged once, and the MTA is served.
func TestMilter1024SessionsFromAStrangerAreRefused(t *testing.T) {
	peertest.RequireRoot(t)
	allow, err := peers.ParseAllow([]string{"root"})
	if err != nil {
		t.Fatal(err)
	}
	log := &testkit.SyncBuffer{}
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.MaxSessions = crowd
		o.AllowPeer = allow.Check
		o.Log = slog.New(slog.NewTextHandler(log, nil))
	})
	h.play(t, goodConn(message("a@ok.test")))
	c := peertest.Start(t, peertest.Stranger, peertest.MilterMail, "tcp", h.addr, crowd)
	if c.Opened != 0 {
		t.Errorf("%d of the stranger's %d sessions stayed open", c.Opened, crowd)
	}
	h.servedWithinASecond(t)
	if n := h.rec.droppedFor("peer"); n != crowd {
		t.Errorf("%d refusals counted, want %d", n, crowd)
	}
	if n := strings.Count(log.String(), "refused a milter connection"); n != 1 {
		t.Errorf("%d log lines for %d refusals from one peer in a minute, want 1:\n%s", n, crowd, log)
	}
	if !strings.Contains(log.String(), "(nobody)") {
		t.Errorf("the log line does not name the peer:\n%s", log)
	}
}

// An allowed peer that goes silent cannot starve the MTA either: with
// 1,024 silent sessions holding every slot, the next session takes the slot
// of the one silent longest.
func TestMilter1024SilentSessionsDoNotStarveTheMTA(t *testing.T) {
	h := newHarness(t, func(_ *policy.Config, _ *milter.Config, o *milter.Options) {
		o.MaxSessions = crowd
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	h.play(t, goodConn(message("a@ok.test")))
	c := peertest.Start(t, peertest.Stranger, peertest.MilterMail, "tcp", h.addr, crowd)
	if c.Opened != crowd {
		t.Fatalf("%d of %d silent sessions open, want all: nothing was at the cap yet", c.Opened, crowd)
	}
	h.servedWithinASecond(t)
	if n := h.rec.droppedFor("evicted"); n != 1 {
		t.Errorf("%d sessions evicted, want 1", n)
	}
}
