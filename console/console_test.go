package console

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

const token = "console-test-token"

// rig is a check API with the console on loopback, over a sandbox engine
// and an inventory that already saw mail from two domains.
type rig struct {
	url     string
	sb      *smtptest.Sandbox
	console *Console
	api     *checkapi.Server
	inv     *inventory.Local
	cfg     *checkapi.Config
}

func newRig(t *testing.T, opts Options, rate float64) *rig {
	t.Helper()
	sb := spectest.Sandbox(t)
	sb.Zone.SetNegativeTTL(1)
	sb.Zone.MX("broken.test", 10, "mx.broken.test") // no address: mx.targets fails
	sb.Zone.MX("shop.test", 10, "mx.accept.test")
	spectest.Authenticated(sb.Zone, "shop.test", "broken.test")
	pc := spectest.Config(sb)
	pc.Cache.MinTTL, pc.Cache.NegativeMaxTTL = time.Second, time.Second
	engine, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := inventory.OpenLocal("", 1000, 1<<30, false, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for _, d := range []string{"shop.test", "broken.test"} {
		s, _ := inventory.FromReport(engine.Evaluate(ctx, policy.Request{Sender: "user@" + d}), time.Now())
		if _, err := inv.Apply(ctx, []inventory.Sighting{s}); err != nil {
			t.Fatal(err)
		}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	cc := &Config{Token: token, Inventory: inv, Record: func(ctx context.Context, b []inventory.Sighting) error {
		_, err := inv.Apply(ctx, b)
		return err
	}}
	r := &rig{sb: sb, console: New(cc, opts), inv: inv}
	r.cfg = &checkapi.Config{Engine: engine, Token: token, Rate: rate, DecisionTimeout: 5 * time.Second, Inventory: inv, Console: r.console}
	r.api = checkapi.New(r.cfg, checkapi.Options{Log: opts.Log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.api.Serve(ln)
	t.Cleanup(func() { r.api.Shutdown(context.Background()) })
	r.url = "http://" + ln.Addr().String()
	return r
}

// browser is an HTTP client that keeps cookies and does not follow
// redirects, so that each answer can be looked at.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func signIn(t *testing.T, r *rig, c *http.Client) (csrf string) {
	t.Helper()
	resp, _ := do(t, c, "POST", r.url+"/login", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	_, page := do(t, c, "GET", r.url+"/", nil)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the overview:\n%s", page)
	}
	return m[1]
}

func TestSignInAndOut(t *testing.T) {
	var log testkit.SyncBuffer
	r := newRig(t, Options{Log: slog.New(slog.NewTextHandler(&log, nil))}, 100)
	defer func() {
		if strings.Contains(log.String(), token) || strings.Contains(log.String(), "typed-secret") || !strings.Contains(log.String(), "signed in") {
			t.Errorf("the log holds a token, or no sign-in:\n%s", log.String())
		}
	}()
	c := browser(t)
	if resp, _ := do(t, c, "GET", r.url+"/", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("signed out, / gives %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, page := do(t, c, "POST", r.url+"/login", url.Values{"token": {"typed-secret"}}); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "not the token") {
		t.Errorf("a wrong token: %d", resp.StatusCode)
	}
	resp, _ := do(t, c, "POST", r.url+"/login", url.Values{"token": {token}})
	cookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"mxguard_session=", "HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("Secure over plain HTTP: the browser would not send it back: %q", cookie)
	}
	if strings.Contains(resp.Header.Get("Location"), token) || strings.Contains(cookie, token) {
		t.Error("the token is in a URL or the cookie")
	}
	resp, page := do(t, c, "GET", r.url+"/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "broken.test") || !strings.Contains(page, "mx.targets") {
		t.Fatalf("overview: %d\n%s", resp.StatusCode, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers %v", resp.Header)
	}
	csrf := csrfField.FindStringSubmatch(page)[1]
	old := c.Jar.Cookies(mustParse(r.url))
	if resp, _ := do(t, c, "POST", r.url+"/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	// The session ends on the server: the old cookie, replayed, is refused.
	replay := browser(t)
	replay.Jar.SetCookies(mustParse(r.url), old)
	if resp, _ := do(t, replay, "GET", r.url+"/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a cookie replayed after logout: %d", resp.StatusCode)
	}
}

func mustParse(s string) *url.URL {
	u, _ := url.Parse(s)
	return u
}

// A forged cookie, an expired session and a session from before a token
// change are all signed out.
func TestForgedExpiredAndOldSessions(t *testing.T) {
	r := newRig(t, Options{}, 100)
	forged := browser(t)
	forged.Jar.SetCookies(mustParse(r.url), []*http.Cookie{{Name: cookieName, Value: randomToken()}})
	resp, _ := do(t, forged, "GET", r.url+"/", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("a forged cookie: %d, Set-Cookie %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}

	short := newRig(t, Options{SessionTTL: time.Nanosecond}, 100)
	c := browser(t)
	do(t, c, "POST", short.url+"/login", url.Values{"token": {token}})
	if resp, _ := do(t, c, "GET", short.url+"/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("an expired session: %d", resp.StatusCode)
	}

	c = browser(t)
	signIn(t, r, c)
	r.console.Reload(&Config{Token: "another-token", Inventory: r.inv})
	if resp, _ := do(t, c, "GET", r.url+"/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a session from before the token changed: %d", resp.StatusCode)
	}
}

// Every POST needs the session's CSRF token and the console's own origin.
func TestPostsNeedTheCSRFTokenAndTheOrigin(t *testing.T) {
	r := newRig(t, Options{}, 100)
	c := browser(t)
	csrf := signIn(t, r, c)
	for name, form := range map[string]url.Values{"none": {}, "wrong": {"csrf": {randomToken()}}} {
		if resp, _ := do(t, c, "POST", r.url+"/domain/broken.test", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s CSRF token: %d", name, resp.StatusCode)
		}
		if resp, _ := do(t, c, "POST", r.url+"/logout", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout with %s CSRF token: %d", name, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", r.url+"/domain/broken.test", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site POST: %v %v", resp.StatusCode, err)
	}
	if resp, _ := do(t, c, "POST", r.url+"/domain/broken.test", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusOK {
		t.Errorf("check again with the token: %d", resp.StatusCode)
	}
}

// Markup in a domain is shown, never run; a huge query is refused.
func TestHostileInput(t *testing.T) {
	r := newRig(t, Options{}, 100)
	c := browser(t)
	signIn(t, r, c)
	evil := `<script>alert(1)</script>"><img src=x onerror=alert(2)>.test`
	resp, page := do(t, c, "GET", r.url+"/check?domain="+url.QueryEscape(evil), nil)
	if resp.StatusCode != 200 || strings.Contains(page, "<script>alert") || strings.Contains(page, "<img src=x") ||
		!strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(page, "domain.syntax") {
		t.Errorf("markup in a domain: %d\n%s", resp.StatusCode, page)
	}
	resp, _ = do(t, c, "GET", r.url+"/domain/"+url.PathEscape(evil), nil)
	if resp.StatusCode != 200 {
		t.Errorf("a domain page for markup: %d", resp.StatusCode)
	}
	if resp, _ := do(t, c, "GET", r.url+"/?q="+strings.Repeat("a", 3000), nil); resp.StatusCode != http.StatusRequestURITooLong {
		t.Errorf("a 3 KB query: %d", resp.StatusCode)
	}
	if resp, _ := do(t, c, "GET", r.url+"/?q="+strings.Repeat("a", 20000), nil); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 20 KB query: %d", resp.StatusCode)
	}
	for _, q := range []string{"?check=nosuch", "?verdict=maybe", "?cursor=!!", "?q=a&q=b", "?other=1"} {
		if resp, _ := do(t, c, "GET", r.url+"/"+q, nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", q, resp.StatusCode)
		}
	}
	long := url.Values{"token": {strings.Repeat("t", 8000)}}
	if resp, _ := do(t, browser(t), "POST", r.url+"/login", long); resp.StatusCode == http.StatusSeeOther {
		t.Error("an 8 KB token signed in")
	}
}

// Wrong tokens typed into the form spend the API's bucket of failed
// logins: the next attempt, even with the right token in the API, waits.
func TestWrongTokensAreRateLimited(t *testing.T) {
	r := newRig(t, Options{}, 1)
	c := browser(t)
	do(t, c, "POST", r.url+"/login", url.Values{"token": {"wrong"}})
	resp, _ := do(t, c, "POST", r.url+"/login", url.Values{"token": {"wrong"}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a second wrong token at 1/s: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", r.url+"/v1/check?domain=ok.test", nil)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("an API request without the token after the console's failures: %v %v", resp.StatusCode, err)
	}
}

// Search finds a domain by part of its name, and opens it by its name.
func TestSearch(t *testing.T) {
	r := newRig(t, Options{}, 100)
	c := browser(t)
	signIn(t, r, c)
	if _, page := do(t, c, "GET", r.url+"/?q=brok", nil); !strings.Contains(page, "broken.test") || strings.Contains(page, `href="/domain/shop.test"`) {
		t.Errorf("search for a part:\n%s", page)
	}
	if resp, _ := do(t, c, "GET", r.url+"/?q=Broken.Test", nil); resp.Header.Get("Location") != "/domain/broken.test" {
		t.Errorf("search for a name: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := do(t, c, "GET", r.url+"/?check=mx.targets", nil); !strings.Contains(page, "broken.test") || strings.Contains(page, `href="/domain/shop.test"`) {
		t.Errorf("filter by check:\n%s", page)
	}
}
