// Package notify tells a hosting provider's systems when a customer
// domain's verdict changes: one signed JSON POST per change to
// notify.webhook.url, from a bounded queue that never blocks mail or
// audits, retried with backoff and jitter.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/inventory"
)

// Event is the body of one notification (README "Notifications").
type Event struct {
	Domain   string              `json:"domain"`
	From     string              `json:"from"`
	To       string              `json:"to"`
	Findings []inventory.Finding `json:"findings"`
	// Fix is what to change, one line per finding that has a fix.
	Fix []string  `json:"fix"`
	At  time.Time `json:"at"`
}

// EventOf is the event of an inventory notice.
func EventOf(n inventory.Notice) Event {
	e := Event{Domain: n.Domain, From: n.Change.From, To: n.Change.To, Findings: n.Change.Findings, Fix: []string{}, At: n.Change.At}
	if e.Findings == nil {
		e.Findings = []inventory.Finding{}
	}
	for _, f := range n.Change.Findings {
		if f.Fix != "" {
			e.Fix = append(e.Fix, f.ID+": "+f.Fix)
		}
	}
	return e
}

// Config is a webhook.
type Config struct {
	URL    string
	Secret string
	// AllowPrivate lets the webhook (or a redirect) reach loopback,
	// private and link-local addresses: off, a URL from a configuration
	// cannot be turned against the relay's own services.
	AllowPrivate bool
	Timeout      time.Duration
	// Retries after the first attempt, waiting Backoff, twice that, ...
	// (with jitter) in between.
	Retries int
	Backoff time.Duration
	Queue   int
	Log     *slog.Logger
	// Recorder counts outcomes: sent, failed (given up), dropped (queue
	// full), retried.
	Recorder func(result string)
}

// Webhook posts events in the background.
type Webhook struct {
	cfg    Config
	client *http.Client
	queue  chan Event
	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	busy   atomic.Int64 // events queued or being delivered
	// allow, in tests, replaces the check of where a connection may go.
	allow func(netip.AddrPort) error
}

// Results counted.
const (
	Sent    = "sent"
	Failed  = "failed"
	Dropped = "dropped"
	Retried = "retried"
)

// maxResponse is what is read of an answer: its status is what counts.
const maxResponse = 4 << 10

// Start validates cfg and starts posting.
func Start(cfg Config) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("notify.webhook.url %q: want an http:// or https:// URL", cfg.URL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Recorder == nil {
		cfg.Recorder = func(string) {}
	}
	w := &Webhook{cfg: cfg, queue: make(chan Event, cfg.Queue), stop: make(chan struct{}), allow: publicOnly}
	if cfg.AllowPrivate {
		w.allow = func(netip.AddrPort) error { return nil }
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return w.allow(ap)
	}}
	w.client = &http.Client{
		Timeout: cfg.Timeout,
		// Every connection is checked where it is made, redirects included.
		Transport: &http.Transport{DialContext: dialer.DialContext, Proxy: nil, MaxIdleConns: 2,
			TLSHandshakeTimeout: cfg.Timeout, ResponseHeaderTimeout: cfg.Timeout},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			return nil
		},
	}
	w.wg.Add(1)
	go w.run()
	return w, nil
}

// publicOnly refuses a connection to an address that is not public:
// loopback, private, link-local, unique-local, unspecified, multicast.
func publicOnly(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("%s is not a public address (notify.webhook.allow_private)", ip)
	}
	return nil
}

// Send queues the events of notices; it never blocks.
func (w *Webhook) Send(notices []inventory.Notice) {
	for _, n := range notices {
		w.busy.Add(1)
		select {
		case w.queue <- EventOf(n):
		default:
			w.busy.Add(-1)
			w.cfg.Recorder(Dropped)
		}
	}
}

func (w *Webhook) run() {
	defer w.wg.Done()
	for {
		select {
		case e := <-w.queue:
			w.deliver(e)
			w.busy.Add(-1)
		case <-w.stop:
			return
		}
	}
}

// deliver posts one event, retrying failures with backoff and jitter.
func (w *Webhook) deliver(e Event) {
	body, _ := json.Marshal(e)
	wait := w.cfg.Backoff
	for attempt := 0; ; attempt++ {
		err := w.post(body)
		if err == nil {
			w.cfg.Recorder(Sent)
			return
		}
		if attempt == w.cfg.Retries {
			w.cfg.Recorder(Failed)
			w.cfg.Log.Warn("webhook notification given up; mail is not affected", "domain", e.Domain, "to", e.To, "attempts", attempt+1, "error", err)
			return
		}
		w.cfg.Recorder(Retried)
		jittered := wait/2 + rand.N(wait) // half to one and a half times the wait
		select {
		case <-time.After(jittered):
		case <-w.stop:
			return
		}
		wait = min(2*wait, time.Minute)
	}
}

// Signature is the X-MXGuard-Signature of a body: sha256=HMAC-SHA256 of
// it under the secret, in hex.
func Signature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (w *Webhook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mxguard")
	if w.cfg.Secret != "" {
		req.Header.Set("X-MXGuard-Signature", Signature(w.cfg.Secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// Flush waits until every event queued is delivered or given up, or ctx
// ends (mxguard audit, before it exits).
func (w *Webhook) Flush(ctx context.Context) {
	for w.busy.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close stops posting; what is queued is dropped.
func (w *Webhook) Close() {
	if w.closed.Swap(true) {
		return
	}
	close(w.stop)
	w.wg.Wait()
}
