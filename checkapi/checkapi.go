// Package checkapi is mxguard's HTTP check API for hosting control panels:
// GET /v1/check?domain=D[&client_ip=IP&helo=H] answers with the report that
// `mxguard check --json` prints, from the engine and caches the mail front
// ends use. It can look up and probe only what that engine may (probe.port,
// probe.allow_networks), however the request is made.
package checkapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/policy"
)

// Config is what requests need. Reload swaps it; a request keeps the Config
// it started with.
type Config struct {
	Engine Evaluator
	// Token, when set, must come as "Authorization: Bearer TOKEN".
	Token string
	// Rate is the requests per second each client may make, in bursts of
	// up to Rate (at least 1).
	Rate float64
	// DecisionTimeout bounds one check, as for mail; what did not finish
	// says temperror.
	DecisionTimeout time.Duration
	// Inventory, when set, answers GET /v1/domains.
	Inventory inventory.Store
	// Console, when set, serves every path outside /v1/.
	Console Console
}

// Evaluator decides; *policy.Engine is the one mxguard uses.
type Evaluator interface {
	Evaluate(ctx context.Context, req policy.Request) *policy.Report
}

// Recorder counts answers by HTTP status, and connections closed to make
// room ("evicted"), in Prometheus in mxguard serve.
type Recorder interface {
	APIRequest(code int)
	ConnectionDropped(reason string)
}

// Options are fixed for the life of a Server.
type Options struct {
	// MaxConcurrency caps the checks running at once; a request that finds
	// no slot within QueueTimeout gets 503.
	MaxConcurrency int
	QueueTimeout   time.Duration
	// MaxConns caps open connections, and MaxUnauthenticated (MaxConns/4
	// when 0) those on which no request has carried the token yet. A new
	// connection at a cap takes the place of an unauthenticated one (the
	// oldest), or else of the authenticated one idle longest.
	MaxConns           int
	MaxUnauthenticated int
	// HeaderTimeout bounds the wait for a request's headers (3s when 0): a
	// connection that says nothing is closed soon. ReadTimeout bounds
	// reading the whole request (10s when 0): a client that trickles it is
	// cut off.
	HeaderTimeout time.Duration
	ReadTimeout   time.Duration
	Log           *slog.Logger
	Recorder      Recorder
}

// Bounds on what a client may send.
const (
	maxQuery     = 2048
	maxHELO      = 512
	maxLogText   = 256
	maxHeader    = 8 << 10
	headerSlack  = 4096 // net/http reads this much beyond MaxHeaderBytes
	readTimeout  = 10 * time.Second
	headTimeout  = 3 * time.Second
	idleTimeout  = 60 * time.Second
	writeMargin  = 10 * time.Second
	clientsKept  = 4096
	checkPath    = "/v1/check"
	domainsPath  = "/v1/domains"
	openAPIPath  = "/v1/openapi.json"
	allowedQuery = "domain, client_ip, helo"
)

// Server serves the API.
type Server struct {
	cfg     atomic.Pointer[Config]
	opts    Options
	slots   chan struct{}
	limiter *limiter
	// failures limits requests without the right token, apart from limiter.
	failures *limiter
	http     *http.Server
	conns    *conns
	active   atomic.Int64
}

// New returns a Server for cfg.
func New(cfg *Config, opts Options) *Server {
	if opts.MaxConcurrency <= 0 {
		opts.MaxConcurrency = 16
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = time.Second
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.MaxUnauthenticated <= 0 {
		opts.MaxUnauthenticated = max(1, opts.MaxConns/4)
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = readTimeout
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = min(headTimeout, opts.ReadTimeout)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{opts: opts, slots: make(chan struct{}, opts.MaxConcurrency), limiter: newLimiter(clientsKept), failures: newLimiter(clientsKept)}
	s.cfg.Store(cfg)
	s.conns = newConns(opts.MaxConns, opts.MaxUnauthenticated, func() {
		if opts.Recorder != nil {
			opts.Recorder.ConnectionDropped("evicted")
		}
	})
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.HeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.QueueTimeout + writeMargin, // extended per check
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeader - headerSlack,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
		ConnState:         s.conns.state,
		ConnContext:       withConn,
	}
	return s
}

// Reload makes new requests use cfg.
func (s *Server) Reload(cfg *Config) { s.cfg.Store(cfg) }

// Serve answers requests on ln until Shutdown; it returns
// http.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(&listener{Listener: ln, pool: s.conns})
}

// Shutdown stops accepting and waits for the checks in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.conns.slots.Close() // an Accept waiting for a slot returns
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.http.Close()
	}
	return err
}

// ActiveRequests is the number of requests being answered now.
func (s *Server) ActiveRequests() int { return int(s.active.Load()) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Add(-1)
	code := s.serve(w, r)
	if s.opts.Recorder != nil {
		s.opts.Recorder.APIRequest(code)
	}
}

// serve answers one request and returns the status it gave. The token is
// checked before anything else, the path included: a stranger learns
// nothing, and spends only the bucket of failed logins.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) int {
	cfg := s.cfg.Load()
	// Failed logins spend a bucket of their own, so that a client without
	// the token (or a stranger behind the same proxy) cannot use up the
	// control panel's.
	client := clientKey(r.RemoteAddr)
	if cfg.Console != nil && !strings.HasPrefix(r.URL.Path, apiPrefix) {
		return s.serveConsole(w, r, cfg, client)
	}
	if cfg.Token != "" && !authorized(r.Header.Get("Authorization"), cfg.Token) {
		// Refused connections are not kept alive: they would hold a slot.
		w.Header().Set("Connection", "close")
		if ok, wait := s.failures.allow(client, cfg.Rate, time.Now()); !ok {
			return tooMany(w, cfg.Rate, wait)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="mxguard"`)
		return fail(w, http.StatusUnauthorized, "missing or wrong bearer token")
	}
	markAuthenticated(r)
	if ok, wait := s.limiter.allow(client, cfg.Rate, time.Now()); !ok {
		return tooMany(w, cfg.Rate, wait)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return fail(w, http.StatusMethodNotAllowed, r.Method+" is not allowed; use GET")
	}
	switch path := r.URL.Path; {
	case path == checkPath:
		req, err := parseQuery(r.URL.RawQuery)
		if err != nil {
			return fail(w, http.StatusBadRequest, err.Error())
		}
		report, code := s.check(w, r, cfg, req)
		if report == nil {
			return code
		}
		return reply(w, http.StatusOK, NewReport(report))
	case path == domainsPath:
		return s.listDomains(w, r, cfg)
	case strings.HasPrefix(path, domainsPath+"/"):
		return s.oneDomain(w, r, cfg, strings.TrimPrefix(path, domainsPath+"/"))
	case path == openAPIPath:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(openAPI)
		return http.StatusOK
	}
	return fail(w, http.StatusNotFound, "no such endpoint; see GET "+openAPIPath)
}

// check runs one check within a slot; nil and the status given when none
// freed in time.
func (s *Server) check(w http.ResponseWriter, r *http.Request, cfg *Config, req policy.Request) (*policy.Report, int) {
	queued, cancelQueue := context.WithTimeout(r.Context(), s.opts.QueueTimeout)
	defer cancelQueue()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-queued.Done():
		if r.Context().Err() != nil {
			return nil, 499 // the client went away; nobody reads an answer
		}
		w.Header().Set("Retry-After", "1")
		return nil, fail(w, http.StatusServiceUnavailable, "busy: too many checks running; try again")
	}
	ctx, cancel := context.WithTimeout(r.Context(), cfg.DecisionTimeout)
	defer cancel()
	// decision_timeout may change on reload: the answer's deadline follows.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(cfg.DecisionTimeout + writeMargin))
	report := cfg.Engine.Evaluate(ctx, req)
	s.opts.Log.Info("api check", "client", r.RemoteAddr, "domain", policy.Printable(report.Domain, maxLogText),
		"client_ip", optional(req.ClientIP), "verdict", report.Verdict().String(), "elapsed_ms", report.Elapsed.Milliseconds())
	return report, http.StatusOK
}

func tooMany(w http.ResponseWriter, rate float64, wait time.Duration) int {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	return fail(w, http.StatusTooManyRequests, "rate limit: at most "+strconv.FormatFloat(rate, 'g', -1, 64)+" requests per second per client")
}

// parseQuery reads domain, client_ip and helo; anything else, a repeated
// parameter or a value the CLI would refuse is an error.
func parseQuery(raw string) (policy.Request, error) {
	var req policy.Request
	if len(raw) > maxQuery {
		return req, errors.New("query longer than " + strconv.Itoa(maxQuery) + " octets")
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return req, errors.New("malformed query: " + err.Error())
	}
	for key, values := range q {
		switch key {
		case "domain", "client_ip", "helo":
		default:
			return req, errors.New("unknown parameter " + strconv.Quote(key) + "; the parameters are " + allowedQuery)
		}
		if len(values) > 1 {
			return req, errors.New("parameter " + key + " given more than once")
		}
		if v := values[0]; !utf8.ValidString(v) || strings.ContainsFunc(v, isControl) {
			return req, errors.New("parameter " + key + " holds control characters or is not UTF-8")
		}
	}
	req.Domain = strings.TrimSpace(q.Get("domain"))
	switch {
	case req.Domain == "":
		return req, errors.New("parameter domain is required: GET " + checkPath + "?domain=example.com")
	case strings.ContainsAny(req.Domain, "@<>"):
		return req, errors.New("domain " + strconv.Quote(req.Domain) + " is an address: give its domain")
	}
	if s, ok := q["client_ip"]; ok {
		ip, err := policy.ParseClientIP(s[0]) // as the CLI's --client-ip
		if err != nil {
			return req, errors.New("client_ip " + err.Error())
		}
		req.ClientIP = ip
	}
	if s, ok := q["helo"]; ok {
		if len(s[0]) > maxHELO {
			return req, errors.New("helo longer than " + strconv.Itoa(maxHELO) + " octets")
		}
		req.HELO = s[0]
	}
	return req, nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// authorized compares the bearer token in constant time.
func authorized(header, token string) bool {
	scheme, got, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

func optional(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// apiError is the body of every answer but 200.
type apiError struct {
	Error string `json:"error"`
}

func fail(w http.ResponseWriter, code int, msg string) int {
	return reply(w, code, apiError{Error: msg})
}

func reply(w http.ResponseWriter, code int, v any) int {
	body, err := json.Marshal(v)
	if err != nil { // only our own types come here
		code, body = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
	return code
}
