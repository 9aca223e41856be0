package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/internal/testkit"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) record(result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[result]++
}

func (c *counts) get(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[result]
}

func notice(domain string) inventory.Notice {
	return inventory.Notice{Domain: domain, Change: inventory.Change{At: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), From: "pass", To: "defer",
		Findings: []inventory.Finding{{ID: "mx.port25", Status: "fail", Detail: "no MX host accepts SMTP", Fix: "make the MX host accept port 25"}}}}
}

func start(t *testing.T, url string, c *counts, tune func(*Config)) *Webhook {
	t.Helper()
	cfg := Config{URL: url, Secret: "s3cret", AllowPrivate: true, Timeout: time.Second, Retries: 2, Backoff: 10 * time.Millisecond, Log: discard, Recorder: c.record}
	if tune != nil {
		tune(&cfg)
	}
	w, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func TestSignedPost(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer srv.Close()
	c := &counts{}
	w := start(t, srv.URL, c, nil)
	w.Send([]inventory.Notice{notice("a.test")})
	r, body := <-got, <-bodies
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s", r.Method, r.Header.Get("Content-Type"))
	}
	if sig := r.Header.Get("X-MXGuard-Signature"); sig != Signature("s3cret", body) || !strings.HasPrefix(sig, "sha256=") {
		t.Errorf("signature %q", sig)
	}
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"domain", "from", "to", "findings", "fix", "at"} {
		if _, ok := e[k]; !ok {
			t.Errorf("the body lacks %q: %s", k, body)
		}
	}
	testkit.WaitFor(t, "the delivery counted", func() bool { return c.get(Sent) == 1 })
}

// A receiver that is down, slow, failing or never answering costs the
// sender nothing: Send returns at once, and what does not fit is dropped.
func TestMisbehavingReceivers(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	for name, url := range map[string]string{
		"down":   closedURL,
		"500":    httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })).URL,
		"silent": httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang })).URL,
		"huge": httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			for range 1 << 14 {
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					return
				}
			}
		})).URL,
	} {
		t.Run(name, func(t *testing.T) {
			c := &counts{}
			w := start(t, url, c, func(c *Config) { c.Queue = 10; c.Timeout = 300 * time.Millisecond })
			began := time.Now()
			for range 1000 {
				w.Send([]inventory.Notice{notice("a.test")})
			}
			if took := time.Since(began); took > 500*time.Millisecond {
				t.Errorf("1000 sends took %v with the receiver %s", took, name)
			}
			if c.get(Dropped) == 0 {
				t.Error("nothing dropped with the queue full")
			}
			testkit.WaitFor(t, "a delivery given up after its retries", func() bool { return c.get(Failed) > 0 && c.get(Retried) >= 2 })
		})
	}
}

// Without allow_private, the webhook cannot reach this host's or the
// network's private services, not even through a redirect.
func TestPrivateAddressesAreRefused(t *testing.T) {
	reached := make(chan string, 4)
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached <- "inner" }))
	defer inner.Close()
	outer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL, http.StatusTemporaryRedirect)
	}))
	defer outer.Close()
	for _, ip := range []string{"127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fd00::1", "0.0.0.0"} {
		if publicOnly(netip.AddrPortFrom(netip.MustParseAddr(ip), 80)) == nil {
			t.Errorf("%s is taken for public", ip)
		}
	}
	if publicOnly(netip.MustParseAddrPort("192.0.2.10:443")) != nil {
		t.Error("a public address is refused")
	}

	c := &counts{}
	w := start(t, outer.URL, c, func(c *Config) { c.AllowPrivate = false; c.Retries = 0 })
	// The outer server stands for a public one; the redirect's target is
	// checked like any other connection.
	outerAddr := netip.MustParseAddrPort(strings.TrimPrefix(outer.URL, "http://"))
	w.allow = func(ap netip.AddrPort) error {
		if ap == outerAddr {
			return nil
		}
		return publicOnly(ap)
	}
	w.Send([]inventory.Notice{notice("a.test")})
	testkit.WaitFor(t, "the delivery given up", func() bool { return c.get(Failed) == 1 })
	select {
	case <-reached:
		t.Error("a redirect reached a loopback service")
	default:
	}
	// And a direct private URL is refused as well.
	c2 := &counts{}
	w2 := start(t, inner.URL, c2, func(c *Config) { c.AllowPrivate = false; c.Retries = 0 })
	w2.Send([]inventory.Notice{notice("a.test")})
	testkit.WaitFor(t, "the delivery given up", func() bool { return c2.get(Failed) == 1 })
	if len(reached) != 0 {
		t.Error("a loopback URL was reached without allow_private")
	}
}

func TestFlushWaitsForDeliveries(t *testing.T) {
	n := 0
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mu.Lock(); n++; mu.Unlock() }))
	defer srv.Close()
	w := start(t, srv.URL, &counts{}, nil)
	for range 20 {
		w.Send([]inventory.Notice{notice("a.test")})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.Flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	if n != 20 || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("%d of 20 delivered when Flush returned", n)
	}
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "not a url"} {
		if _, err := Start(Config{URL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
