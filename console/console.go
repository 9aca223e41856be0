// Package console is mxguard's web console for a hosting provider's
// support desk: the failing customer domains, why and since when, each
// domain's report with its fix texts and history, and a check of any
// domain now. The check API (package checkapi) serves it on api.listen for
// every path outside /v1/; its pages are rendered on the server with
// html/template and need no JavaScript.
//
// Access: the API's token, typed into a form once, opens a session kept on
// the server; the browser holds only its random ID, in an HttpOnly,
// SameSite=Strict cookie (Secure over TLS) that expires. Every POST carries
// the session's CSRF token and must come from the console's own origin;
// every page is sent with a Content-Security-Policy that allows nothing
// but the console's own stylesheet.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/inventory"
)

// Inventory is what the console reads of the domain inventory.
type Inventory interface {
	Get(ctx context.Context, domain string) (*inventory.Entry, error)
	List(ctx context.Context, q inventory.Query) ([]*inventory.Entry, string, error)
	Counts(ctx context.Context) (map[string]int, error)
	CheckCounts(ctx context.Context, checks []string) (map[string]int, error)
}

// Config is what pages need; Reload swaps it.
type Config struct {
	// Token is api.token: the console is off without one.
	Token string
	// Inventory lists the domains; nil when this mxguard keeps none.
	Inventory Inventory
	// Record stores a check made from the console in the inventory, as an
	// audit's result (its verdict changes are notified); nil: not stored.
	Record func(ctx context.Context, batch []inventory.Sighting) error
}

// Options are fixed for the life of a Console.
type Options struct {
	// SessionTTL is how long a sign-in lasts (8h when 0).
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept (1000 when 0); beyond it the one
	// that expires soonest goes.
	MaxSessions int
	Log         *slog.Logger
}

// Console serves the pages; it implements checkapi.Console.
type Console struct {
	cfg      atomic.Pointer[Config]
	opts     Options
	pages    *template.Template
	static   http.Handler
	sessions sessions
	origin   *http.CrossOriginProtection
}

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

const (
	cookieName   = "mxguard_session"
	maxForm      = 4 << 10
	maxTokenForm = 1 << 10
	// contentPolicy allows the console's stylesheet and nothing else: no
	// script, no frame, no form sent elsewhere.
	contentPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

// New returns a Console for cfg.
func New(cfg *Config, opts Options) *Console {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 8 * time.Hour
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 1000
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	static, _ := fs.Sub(staticFiles, "static")
	c := &Console{
		opts:     opts,
		pages:    template.Must(template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/*.html")),
		static:   http.StripPrefix("/static/", http.FileServerFS(static)),
		sessions: sessions{max: opts.MaxSessions, byID: map[[32]byte]*session{}},
		origin:   http.NewCrossOriginProtection(),
	}
	c.cfg.Store(cfg)
	return c
}

// Reload makes new requests use cfg. A changed token ends every session.
func (c *Console) Reload(cfg *Config) {
	if old := c.cfg.Swap(cfg); old == nil || old.Token != cfg.Token {
		c.sessions.clear()
	}
}

// session is one sign-in, kept on the server.
type session struct {
	expires time.Time
	csrf    string
}

// sessions are kept by the SHA-256 of their cookie value, so that neither
// the table nor a timing difference gives the cookie away.
type sessions struct {
	mu   sync.Mutex
	max  int
	byID map[[32]byte]*session
}

func (s *sessions) open(ttl time.Duration, now time.Time) (cookie string, sess *session) {
	cookie, csrf := randomToken(), randomToken()
	sess = &session{expires: now.Add(ttl), csrf: csrf}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, old := range s.byID { // expired ones go first, then the soonest to expire
		if !old.expires.After(now) {
			delete(s.byID, id)
		}
	}
	for len(s.byID) >= s.max {
		var soonest [32]byte
		var at time.Time
		for id, old := range s.byID {
			if at.IsZero() || old.expires.Before(at) {
				soonest, at = id, old.expires
			}
		}
		delete(s.byID, soonest)
	}
	s.byID[sha256.Sum256([]byte(cookie))] = sess
	return cookie, sess
}

func (s *sessions) find(cookie string, now time.Time) *session {
	id := sha256.Sum256([]byte(cookie))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[id]
	if sess != nil && !sess.expires.After(now) {
		delete(s.byID, id)
		return nil
	}
	return sess
}

func (s *sessions) close(cookie string) {
	s.mu.Lock()
	delete(s.byID, sha256.Sum256([]byte(cookie)))
	s.mu.Unlock()
}

func (s *sessions) clear() {
	s.mu.Lock()
	clear(s.byID)
	s.mu.Unlock()
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ServeConsole answers one request; see checkapi.Console.
func (c *Console) ServeConsole(w http.ResponseWriter, r *http.Request, api checkapi.ConsoleAPI) (int, bool) {
	cfg := c.cfg.Load()
	h := w.Header()
	h.Set("Content-Security-Policy", contentPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if len(r.URL.RawQuery) > maxQuery {
		return c.fail(w, r, nil, http.StatusRequestURITooLong, "The address is too long."), false
	}
	if r.URL.Path == "/static/console.css" {
		h.Set("Cache-Control", "public, max-age=3600")
		c.static.ServeHTTP(w, r)
		return http.StatusOK, false
	}
	h.Set("Cache-Control", "no-store")
	if cfg.Token == "" {
		return c.fail(w, r, nil, http.StatusNotFound, "The console needs api.token to be set."), false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := c.origin.Check(r); err != nil {
			return c.fail(w, r, nil, http.StatusForbidden, "This form was not sent from the console's own pages."), false
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	}
	now := time.Now()
	var sess *session
	var cookie string
	if ck, err := r.Cookie(cookieName); err == nil {
		cookie = ck.Value
		sess = c.sessions.find(cookie, now)
	}
	if r.URL.Path == "/login" {
		return c.login(w, r, cfg, api, sess), sess != nil
	}
	if sess == nil {
		if cookie != "" { // forged, expired or ended: the browser forgets it
			http.SetCookie(w, c.cookie(r, "", -1))
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return http.StatusSeeOther, false
		}
		return c.fail(w, r, nil, http.StatusUnauthorized, "Sign in first."), false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.csrf)) != 1 {
			return c.fail(w, r, sess, http.StatusForbidden, "This form has expired: reload the page and try again."), true
		}
	}
	p := page{r: r, cfg: cfg, api: api, sess: sess}
	switch path := r.URL.Path; {
	case path == "/logout" && r.Method == http.MethodPost:
		c.sessions.close(cookie)
		http.SetCookie(w, c.cookie(r, "", -1))
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return http.StatusSeeOther, false
	case path == "/" && isGet(r):
		return c.overview(w, p), true
	case path == "/check" && isGet(r):
		return c.checkAny(w, p), true
	case len(path) > len(domainPrefix) && path[:len(domainPrefix)] == domainPrefix:
		return c.domain(w, p, path[len(domainPrefix):]), true
	}
	return c.fail(w, r, sess, http.StatusNotFound, "There is no such page."), true
}

func isGet(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// cookie is the session cookie with value, or its removal (maxAge < 0).
func (c *Console) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode}
}

// login shows the form, or signs in with the token it was given. A wrong
// token spends the API's bucket of failed logins.
func (c *Console) login(w http.ResponseWriter, r *http.Request, cfg *Config, api checkapi.ConsoleAPI, sess *session) int {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if sess != nil {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return http.StatusSeeOther
		}
		return c.render(w, http.StatusOK, "login", loginView{})
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		return c.fail(w, r, sess, http.StatusMethodNotAllowed, "Use the sign-in form.")
	}
	token := r.PostFormValue("token")
	if len(token) > maxTokenForm || subtle.ConstantTimeCompare([]byte(token), []byte(cfg.Token)) != 1 {
		if ok, wait := api.RefusedLogin(); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			c.opts.Log.Warn("console: sign-in refused, rate limited", "client", r.RemoteAddr)
			return c.render(w, http.StatusTooManyRequests, "login", loginView{Error: "Too many attempts: wait a little and try again."})
		}
		c.opts.Log.Info("console: wrong token", "client", r.RemoteAddr)
		return c.render(w, http.StatusUnauthorized, "login", loginView{Error: "That is not the token (api.token)."})
	}
	value, _ := c.sessions.open(c.opts.SessionTTL, time.Now())
	http.SetCookie(w, c.cookie(r, value, int(c.opts.SessionTTL.Seconds())))
	c.opts.Log.Info("console: signed in", "client", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return http.StatusSeeOther
}

// render writes a page; a template error is logged and answered with 500.
func (c *Console) render(w http.ResponseWriter, code int, name string, v any) int {
	var b bytes.Buffer
	if err := c.pages.ExecuteTemplate(&b, name, v); err != nil {
		c.opts.Log.Error("console: rendering a page failed", "page", name, "error", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	b.WriteTo(w)
	return code
}

// fail answers with an error page (with the navigation when signed in).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, sess *session, code int, msg string) int {
	v := errorView{Message: msg, Code: code}
	if sess != nil {
		v.CSRF = sess.csrf
	}
	return c.render(w, code, "error", v)
}

var _ checkapi.Console = (*Console)(nil)
