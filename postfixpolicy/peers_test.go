package postfixpolicy

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/peertest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

func TestMain(m *testing.M) { peertest.Main(m) }

// drops counts dropped connections by reason.
type drops struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *drops) Decision(*policy.Report, string) {}
func (d *drops) ConnectionDropped(_, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	d.n[reason]++
}

func (d *drops) count(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[reason]
}

// answeredWithinASecond asks as Postfix does on a new connection and fails
// the test unless the answer comes within a second (Postfix's own timeout
// is 10s; after it, mail leaves unchecked). The domain was decided before.
func (r *rig) answeredWithinASecond(t *testing.T) {
	t.Helper()
	began := time.Now()
	got, err := r.dial(t).ask(rcpt("a@ok.test", "w", "u@remote.example")...)
	if took := time.Since(began); err != nil || !strings.HasPrefix(got, "PREPEND") || took > time.Second {
		t.Fatalf("Postfix's request: %q %v after %v, want an answer within 1s", got, err, took)
	}
}

func (r *rig) warm(t *testing.T) {
	t.Helper()
	if _, err := r.dial(t).ask(rcpt("a@ok.test", "warm", "u@remote.example")...); err != nil {
		t.Fatal(err)
	}
}

// 5,000 idle connections, five times the cap, cannot keep Postfix out: each
// new connection takes the slot of the one idle longest.
func TestPolicy5000IdleConnectionsDoNotStarvePostfix(t *testing.T) {
	rec := &drops{}
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) { o.MaxConns = 1024; o.Recorder = rec })
	r.warm(t)
	peertest.Start(t, peertest.Stranger, peertest.Silent, "tcp", r.addr, 5000)
	r.answeredWithinASecond(t)
	// Not every one of the 5,000 reaches mxguard: with the kernel's accept
	// queue full, some handshakes complete only on the client's side.
	if n := rec.count("evicted"); n == 0 {
		t.Error("no connection evicted")
	}
	if n := r.srv.ActiveConns(); n > 1024 {
		t.Errorf("%d connections open, above the cap of 1024", n)
	}
	if n := rec.count("malformed"); n != 0 {
		t.Errorf("%d evicted connections counted as malformed", n)
	}
}

// Half-sent requests are no better: 1,024 of them, then Postfix is answered.
func TestPolicy1024HalfSentRequestsDoNotStarvePostfix(t *testing.T) {
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) { o.MaxConns = 1024; o.IdleTimeout = time.Hour })
	r.warm(t)
	peertest.Start(t, peertest.Stranger, peertest.HalfPolicyRequest, "tcp", r.addr, 1024)
	r.answeredWithinASecond(t)
}

// A request must arrive whole soon after it begins, whatever the idle
// timeout.
func TestHalfSentRequestIsCutOff(t *testing.T) {
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) { o.IdleTimeout = time.Hour })
	c := r.dial(t)
	io.WriteString(c.c, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
	began := time.Now()
	c.c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := c.in.ReadByte(); err != io.EOF {
		t.Fatalf("a half-sent request: %v, want the connection closed", err)
	}
	if took := time.Since(began); took > 4*requestTimeout {
		t.Errorf("closed after %v, want about %v", took, requestTimeout)
	}
}

// Another local user's connections are refused before they take a slot,
// and logged once per peer per minute.
func TestPolicyStrangersAreRefused(t *testing.T) {
	peertest.RequireRoot(t)
	allow, err := peers.ParseAllow([]string{"root"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &drops{}
	log := &testkit.SyncBuffer{}
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) {
		o.MaxConns = 1024
		o.AllowPeer = allow.Check
		o.Recorder = rec
		o.Log = slog.New(slog.NewTextHandler(log, nil))
	})
	r.warm(t)
	peertest.Start(t, peertest.Stranger, peertest.Silent, "tcp", r.addr, 1024)
	testkit.WaitFor(t, "1024 refusals", func() bool { return rec.count("peer") == 1024 })
	r.answeredWithinASecond(t)
	if n := strings.Count(log.String(), "refused a policy connection"); n != 1 {
		t.Errorf("%d log lines for 1024 refusals, want 1:\n%s", n, log)
	}
}

// One peer sending malformed requests gets one log line a minute, which
// counts the rest, instead of one per request.
func TestMalformedRequestsAreLoggedOncePerPeer(t *testing.T) {
	rec := &drops{}
	log := &testkit.SyncBuffer{}
	r := newRig(t, func(_ *policy.Config, _ *Config, o *Options) {
		o.Recorder = rec
		o.Log = slog.New(slog.NewTextHandler(log, nil))
	})
	const n = 1000
	for range n {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "this is not an attribute\n\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	testkit.WaitFor(t, "every malformed request counted", func() bool { return rec.count("malformed") == n })
	if lines := strings.Count(log.String(), "malformed policy request"); lines != 1 {
		t.Errorf("%d log lines for %d malformed requests from one peer, want 1", lines, n)
	}
}
