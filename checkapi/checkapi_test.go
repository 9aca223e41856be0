package checkapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// fakeEngine answers every request with a pass and remembers the requests.
type fakeEngine struct {
	mu   sync.Mutex
	reqs []policy.Request
	// entered and release, when set, hold each evaluation until released.
	entered chan struct{}
	release chan struct{}
	// deadline is how far the context's deadline lay when a check began.
	deadline time.Duration
}

func (f *fakeEngine) Evaluate(ctx context.Context, req policy.Request) *policy.Report {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	if d, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(d)
	}
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
		<-f.release
	}
	return &policy.Report{Domain: req.Domain, ClientIP: req.ClientIP,
		Checks: []policy.Result{{ID: "mx.records", Status: policy.StatusPass, Detail: "1 MX record"}}}
}

func (f *fakeEngine) last() policy.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs[len(f.reqs)-1]
}

func startAPI(t *testing.T, cfg *Config, opts Options) (*Server, string) {
	t.Helper()
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	if cfg.DecisionTimeout == 0 {
		cfg.DecisionTimeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := New(cfg, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

type answer struct {
	code   int
	header http.Header
	body   string
}

func get(t *testing.T, url, token string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err) // not Fatal: some tests ask from other goroutines
		return answer{header: http.Header{}}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	conformsToOpenAPI(t, req, resp.StatusCode, resp.Header, body)
	return answer{resp.StatusCode, resp.Header, string(body)}
}

// errorOf decodes an error answer, which must be JSON.
func errorOf(t *testing.T, a answer) string {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e.Error
}

func TestCheckAnswersTheCLIReport(t *testing.T) {
	engine := &fakeEngine{}
	_, base := startAPI(t, &Config{Engine: engine}, Options{})
	a := get(t, base+"/v1/check?domain=example.com&client_ip=::ffff:192.0.2.7&helo=mail.example.com", "")
	if a.code != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %q", a.code, a.header.Get("Content-Type"), a.body)
	}
	var got struct {
		Domain  string `json:"domain"`
		Verdict string `json:"verdict"`
		Checks  []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Detail string `json:"detail"`
			Host   string `json:"host"`
			IP     string `json:"ip"`
		} `json:"checks"`
		ElapsedMS *int64 `json:"elapsed_ms"`
	}
	dec := json.NewDecoder(strings.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Domain != "example.com" || got.Verdict != "pass" || len(got.Checks) != 1 || got.Checks[0].ID != "mx.records" ||
		got.Checks[0].Status != "pass" || got.ElapsedMS == nil {
		t.Errorf("report %+v", got)
	}
	want := policy.Request{Domain: "example.com", ClientIP: netip.MustParseAddr("192.0.2.7"), HELO: "mail.example.com"}
	if req := engine.last(); req != want {
		t.Errorf("engine asked %+v, want %+v (an IPv4-mapped client unmapped, as the CLI does)", req, want)
	}
	if engine.deadline <= 0 || engine.deadline > 5*time.Second {
		t.Errorf("a check ran with %v left; want decision_timeout (5s) at most", engine.deadline)
	}
}

func TestBadInputIsA400WithAJSONError(t *testing.T) {
	engine := &fakeEngine{}
	_, base := startAPI(t, &Config{Engine: engine}, Options{})
	for query, want := range map[string]string{
		"":                                  "domain is required",
		"domain=":                           "domain is required",
		"domain=%20":                        "domain is required",
		"domain=a.example&domain=b.example": "more than once",
		"domain=a.example&ip=192.0.2.1":     `unknown parameter "ip"`,
		"domain=user@example.com":           "is an address",
		"domain=example.com&client_ip=mail": "is not an IP address",
		"domain=example.com&client_ip=fe80::1%25eth0":         "is not an IP address",
		"domain=exa%0Ample.com":                               "control characters",
		"domain=%FF.example":                                  "not UTF-8",
		"domain=example.com;x":                                "malformed query",
		"domain=example.com&helo=" + strings.Repeat("a", 600): "helo longer",
		"domain=" + strings.Repeat("a", 3000):                 "query longer",
	} {
		a := get(t, base+"/v1/check?"+query, "")
		if a.code != http.StatusBadRequest {
			t.Errorf("%.60q: %d %q, want 400", query, a.code, a.body)
			continue
		}
		if msg := errorOf(t, a); !strings.Contains(msg, want) {
			t.Errorf("%.60q: error %q, want it to say %q", query, msg, want)
		}
	}
	if len(engine.reqs) != 0 {
		t.Errorf("bad requests reached the engine: %+v", engine.reqs)
	}
}

func TestOnlyGETOnTheCheckPath(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}}, Options{})
	if a := get(t, base+"/v1/checks?domain=example.com", ""); a.code != 404 {
		t.Errorf("unknown path: %d", a.code)
	} else {
		errorOf(t, a)
	}
	resp, err := http.Post(base+"/v1/check?domain=example.com", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestBearerToken(t *testing.T) {
	engine := &fakeEngine{}
	s, base := startAPI(t, &Config{Engine: engine, Token: "s3cret-token"}, Options{})
	url := base + "/v1/check?domain=example.com"
	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic s3cret-token", "Bearer s3cret-token2", "s3cret-token"} {
		a := get(t, url, auth)
		if a.code != 401 || a.header.Get("WWW-Authenticate") != `Bearer realm="mxguard"` {
			t.Errorf("Authorization %q: %d, WWW-Authenticate %q", auth, a.code, a.header.Get("WWW-Authenticate"))
		}
		errorOf(t, a)
	}
	for _, auth := range []string{"Bearer s3cret-token", "bearer s3cret-token"} {
		if a := get(t, url, auth); a.code != 200 {
			t.Errorf("Authorization %q: %d %s", auth, a.code, a.body)
		}
	}
	// A reload changes the token for the next request.
	s.Reload(&Config{Engine: engine, Token: "new-token", Rate: 1000, DecisionTimeout: time.Second})
	if a := get(t, url, "Bearer s3cret-token"); a.code != 401 {
		t.Errorf("the old token after a reload: %d", a.code)
	}
	if a := get(t, url, "Bearer new-token"); a.code != 200 {
		t.Errorf("the new token after a reload: %d", a.code)
	}
}

func TestRateLimitPerClient(t *testing.T) {
	// One request per 100s: the second is limited however slow the machine.
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Rate: 0.01}, Options{})
	url := base + "/v1/check?domain=example.com"
	if a := get(t, url, ""); a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	a := get(t, url, "")
	if retry, _ := strconv.Atoi(a.header.Get("Retry-After")); a.code != 429 || retry < 90 || retry > 100 {
		t.Fatalf("second request: %d, Retry-After %q; want 429 with Retry-After about 100", a.code, a.header.Get("Retry-After"))
	}
	if msg := errorOf(t, a); !strings.Contains(msg, "rate limit") {
		t.Errorf("error %q", msg)
	}
}

// Requests without the token cannot use up the bucket of the client that
// has it (behind a proxy, they share its address).
func TestFailedLoginsHaveABucketOfTheirOwn(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "t", Rate: 0.01}, Options{})
	url := base + "/v1/check?domain=example.com"
	if a := get(t, url, "Bearer wrong"); a.code != 401 {
		t.Fatalf("first wrong token: %d", a.code)
	}
	if a := get(t, url, "Bearer wrong"); a.code != 429 {
		t.Fatalf("second wrong token within the limit: %d, want 429", a.code)
	}
	if a := get(t, url, "Bearer t"); a.code != 200 {
		t.Errorf("the right token after a stranger's failures: %d, want 200", a.code)
	}
	if a := get(t, url, "Bearer t"); a.code != 429 {
		t.Errorf("the right token past its own limit: %d, want 429", a.code)
	}
}

func TestLimiterRefillsAndKeepsClientsApart(t *testing.T) {
	l := newLimiter(16)
	now := time.Unix(1e9, 0)
	a, b := clientKey("192.0.2.1:4000"), clientKey("192.0.2.2:4000")
	for i := 0; i < 2; i++ {
		if !allowed(l, a, 2, now) {
			t.Fatalf("request %d of a burst of 2 refused", i)
		}
	}
	if allowed(l, a, 2, now) {
		t.Error("a third request in the same instant allowed at rate 2")
	}
	if !allowed(l, b, 2, now) {
		t.Error("another client was limited by the first")
	}
	if !allowed(l, a, 2, now.Add(500*time.Millisecond)) || allowed(l, a, 2, now.Add(500*time.Millisecond)) {
		t.Error("half a second at rate 2 must give exactly one token")
	}
	// Below one request a second, the bucket still holds one.
	if !allowed(l, clientKey("192.0.2.3:1"), 0.5, now) || allowed(l, clientKey("192.0.2.3:1"), 0.5, now.Add(time.Second)) {
		t.Error("rate 0.5: want one request, then one every two seconds")
	}
	if clientKey("[2001:db8::1]:5") != clientKey("[2001:db8::2]:6") {
		t.Error("two addresses of one IPv6 /64 are limited apart")
	}
	if clientKey("[::ffff:192.0.2.1]:5") != a {
		t.Error("an IPv4-mapped client is limited apart from its IPv4 address")
	}
}

func allowed(l *limiter, client netip.Prefix, rate float64, now time.Time) bool {
	ok, _ := l.allow(client, rate, now)
	return ok
}

func TestBoundedConcurrency(t *testing.T) {
	engine := &fakeEngine{entered: make(chan struct{}), release: make(chan struct{})}
	_, base := startAPI(t, &Config{Engine: engine}, Options{MaxConcurrency: 1, QueueTimeout: 100 * time.Millisecond})
	url := base + "/v1/check?domain=example.com"
	first := make(chan answer, 1)
	go func() { first <- get(t, url, "") }()
	<-engine.entered // the only slot is taken
	a := get(t, url, "")
	if a.code != 503 || a.header.Get("Retry-After") == "" {
		t.Errorf("with the slot taken: %d, Retry-After %q; want 503 with Retry-After", a.code, a.header.Get("Retry-After"))
	}
	errorOf(t, a)
	close(engine.release)
	if a := <-first; a.code != 200 {
		t.Errorf("the check holding the slot: %d", a.code)
	}
	go func() { <-engine.entered }()
	if a := get(t, url, ""); a.code != 200 {
		t.Errorf("after the slot is free: %d", a.code)
	}
}

func TestShutdownWaitsForChecksInFlight(t *testing.T) {
	engine := &fakeEngine{entered: make(chan struct{}), release: make(chan struct{})}
	s, base := startAPI(t, &Config{Engine: engine}, Options{})
	done := make(chan answer, 1)
	go func() { done <- get(t, base+"/v1/check?domain=example.com", "") }()
	<-engine.entered
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v with a check in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(engine.release)
	if a := <-done; a.code != 200 {
		t.Errorf("the check in flight: %d", a.code)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestSlowAndOversizedRequestsAreCutOff(t *testing.T) {
	engine := &fakeEngine{}
	_, base := startAPI(t, &Config{Engine: engine}, Options{ReadTimeout: 200 * time.Millisecond})
	addr := strings.TrimPrefix(base, "http://")
	// A client that never finishes its headers is disconnected.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /v1/check?domain=example.com HTTP/1.1\r\nHost: x\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a backstop only
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the trickling connection was not closed by the server: %v", err)
	}
	// Headers beyond 8 KiB are refused, below it they are not.
	for size, want := range map[int]int{7 << 10: 200, 9 << 10: http.StatusRequestHeaderFieldsTooLarge, 16 << 10: http.StatusRequestHeaderFieldsTooLarge} {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/check?domain=example.com", nil)
		req.Header.Set("X-Padding", strings.Repeat("a", size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%d KiB of headers: %d, want %d", size>>10, resp.StatusCode, want)
		}
	}
	if len(engine.reqs) != 1 {
		t.Errorf("want only the 7 KiB request to reach the engine, got %+v", engine.reqs)
	}
}

type countingRecorder struct {
	mu      sync.Mutex
	codes   map[int]int
	dropped int
}

func (c *countingRecorder) ConnectionDropped(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropped++
}

func (c *countingRecorder) APIRequest(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.codes[code]++
}

func TestRecorderCountsByStatus(t *testing.T) {
	rec := &countingRecorder{codes: map[int]int{}}
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "t"}, Options{Recorder: rec})
	get(t, base+"/v1/check?domain=example.com", "Bearer t")
	get(t, base+"/v1/check?domain=example.com", "")
	get(t, base+"/v1/check", "Bearer t")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.codes[200] != 1 || rec.codes[401] != 1 || rec.codes[400] != 1 {
		t.Errorf("counted %v", rec.codes)
	}
}

func TestHandlerDirectly(t *testing.T) {
	// The handler works behind any server, e.g. httptest's.
	s := New(&Config{Engine: &fakeEngine{}, Rate: 10, DecisionTimeout: time.Second}, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/check?domain=example.com", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"domain":"example.com"`) {
		t.Errorf("%d %s", w.Code, w.Body)
	}
}
