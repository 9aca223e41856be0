package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/console"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/notify"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/sdnotify"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/postfixpolicy"
)

const serveUsage = `Usage: mxguard serve [--config FILE]

Runs the milter. Without --config it uses the built-in configuration
(configs/mxguard.yaml): inet:127.0.0.1:8891, metrics on 127.0.0.1:9891, the
resolvers of /etc/resolv.conf. SIGHUP reloads the file (a bad file keeps the
running configuration); SIGTERM drains open sessions and exits.

Flags:
`

// daemon is a running `mxguard serve`.
type daemon struct {
	path      string // config file; "" for the built-in one
	cfg       *config.Config
	started   *config.Config // what the listeners and the protocol were set up with
	log       *slog.Logger
	level     *slog.LevelVar
	metrics   *metrics.Metrics
	engine    atomic.Pointer[policy.Engine]
	milter    *milter.Milter        // nil when milter.listen is empty
	policy    *postfixpolicy.Server // nil when policy_service.listen is empty
	api       *checkapi.Server      // nil when api.listen is empty
	console   *console.Console      // nil until api.listen and api.token are set; kept across reloads
	shared    *sharedcache.Redis    // nil when cache.shared.url is empty; kept across reloads
	inventory *inventory.Inventory
	webhook   *notify.Webhook // nil when notify.webhook.url is empty
	// The local users that may hold a milter or policy session; reloadable.
	milterPeers, policyPeers atomic.Pointer[peers.Allow]
	systemd                  *sdnotify.Notifier // nil when not started by systemd with Type=notify
	// watchdogEvery is how often systemd wants a keep-alive (0: never).
	watchdogEvery time.Duration
	fronts        []frontEnd
	serving       atomic.Bool
}

// serveFlagSet is the flag set of `mxguard serve`, parsed into path.
func serveFlagSet(path *string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, serveUsage); fs.PrintDefaults() }
	fs.StringVar(path, "config", "", "configuration `FILE` (default: the built-in configs/mxguard.yaml)")
	return fs
}

func runServe(args []string, stderr io.Writer) int {
	path := new(string)
	fs := serveFlagSet(path, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Errorf("serve takes no arguments, got %q", fs.Args()))
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return usageError(stderr, err)
	}
	d := &daemon{path: *path, cfg: cfg, started: cfg, level: new(slog.LevelVar)}
	d.log = newLogger(cfg.Log, d.level, stderr)
	// systemd's side of things is an extra: trouble with it is logged, and
	// mxguard serves regardless.
	if d.systemd, err = sdnotify.FromEnv(); err != nil {
		d.log.Warn("not telling systemd how mxguard is doing", "error", err)
	}
	if d.watchdogEvery, err = sdnotify.WatchdogInterval(); err != nil {
		d.log.Warn("no watchdog pings", "error", err)
	}
	log.SetOutput(newSlogWriter(d.log)) // go-milter logs through the standard logger
	log.SetFlags(0)
	if err := d.run(); err != nil {
		d.log.Error("mxguard stopped", "error", err)
		return 1
	}
	return 0
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	setLevel(level, c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func setLevel(v *slog.LevelVar, name config.LogLevel) {
	var l slog.Level
	l.UnmarshalText([]byte(name)) // validated by the config loader
	v.Set(l)
}

func (d *daemon) run() error {
	d.metrics = metrics.New(d.engine.Load)
	if url := d.cfg.Cache.Shared.URL; url != "" {
		shared, err := sharedcache.New(url, d.cfg.Cache.Shared.Timeout.D, d.log)
		if err != nil {
			return err
		}
		defer shared.Close()
		d.shared = shared
		d.metrics.WatchSharedCache(shared, d.engine.Load)
	}
	engine, err := d.newEngine(d.cfg, nil)
	if err != nil {
		return err
	}
	d.engine.Store(engine)
	milterPeers, policyPeers, err := allowedPeers(d.cfg)
	if err != nil {
		return err
	}
	d.milterPeers.Store(milterPeers)
	d.policyPeers.Store(policyPeers)
	if err := d.openInventory(); err != nil {
		return err
	}
	defer d.closeInventory()
	// Metrics first: by the time an MTA or a test can connect to a front
	// end, /metrics and /healthz answer.
	var httpSrv *http.Server
	if addr := d.cfg.Metrics.Listen; addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		httpSrv = &http.Server{Handler: d.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		go httpSrv.Serve(mln)
	}
	// Serving from the first listener on: if a later one cannot open,
	// mxguard exits.
	d.serving.Store(true)
	served := make(chan error, 3)
	if err := d.startFrontEnds(engine, served); err != nil {
		for _, f := range d.fronts { // those that did open
			f.shutdown(context.Background())
		}
		if httpSrv != nil {
			httpSrv.Close()
		}
		return err
	}
	d.log.Info("mxguard serving", "version", buildVersion(), "milter", d.cfg.Milter.Listen.Spec, "policy_service", d.cfg.PolicyService.Listen.Spec,
		"metrics", d.cfg.Metrics.Listen, "api", d.cfg.API.Listen, "config", d.source(), "resolvers", engine.Resolvers())
	stopSelfCheck := d.selfCheckEvery(d.cfg.Outbound.SelfCheckInterval.D)
	defer stopSelfCheck()
	if every := d.cfg.Inventory.AuditInterval.D; every > 0 {
		stopAudit := d.auditEvery(every)
		defer stopAudit()
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	// Every listener is open: systemd may start the MTAs that depend on us.
	d.notify("ready", d.systemd.Ready(d.status()))
	var watchdog <-chan time.Time
	if d.watchdogEvery > 0 {
		t := time.NewTicker(d.watchdogEvery)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case err := <-served:
			return err
		case <-watchdog:
			// From this loop, so a wedged reload or shutdown stops the pings.
			d.notify("watchdog", d.systemd.Watchdog())
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				d.notify("reloading", d.systemd.Reloading())
				status := d.status()
				if err := d.reload(); err != nil {
					status += "; the last reload failed (see the log), the previous configuration runs"
				}
				d.notify("ready", d.systemd.Ready(status))
				continue
			}
			d.notify("stopping", d.systemd.Stopping("draining sessions"))
			return d.shutdown(sig, served, httpSrv)
		}
	}
}

// status is the line systemctl status shows: the listeners open (a reload
// does not move them).
func (d *daemon) status() string {
	var on []string
	if s := d.started.Milter.Listen.Spec; s != "" {
		on = append(on, "milter "+s)
	}
	if s := d.started.PolicyService.Listen.Spec; s != "" {
		on = append(on, "policy service "+s)
	}
	if s := d.started.API.Listen; s != "" {
		on = append(on, "check API "+s)
	}
	return "serving: " + strings.Join(on, ", ")
}

// notify logs a failed message to systemd; the service goes on regardless.
func (d *daemon) notify(what string, err error) {
	if err != nil {
		d.log.Warn("systemd notification failed", "state", what, "error", err)
	}
}

// selfCheckEvery runs the egress self-check now and then every interval, in
// the background, with the engine serving at the time; it never touches
// mail. The returned function stops it.
func (d *daemon) selfCheckEvery(interval time.Duration) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			d.selfCheck(ctx)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// selfCheck checks the relay's own outbound addresses, logs every finding
// and exports them.
func (d *daemon) selfCheck(ctx context.Context) {
	engine := d.engine.Load()
	helo := engine.Config().EgressHELO
	reports := engine.SelfCheck(ctx, helo)
	if ctx.Err() != nil {
		return
	}
	d.metrics.SelfCheck(reports)
	for _, r := range reports {
		clean := true
		for _, c := range r.Checks {
			if c.Finding() {
				clean = false
				d.log.Warn("egress self-check", "address", r.ClientIP.String(), "helo", helo, "check", string(c.ID),
					"status", c.Status.String(), "detail", c.Detail, "fix", c.Fix())
			}
		}
		for _, a := range r.Blocklists {
			if a.Status == policy.StatusFail {
				d.log.Warn("egress address listed", "address", r.ClientIP.String(), "zone", a.Zone, "code", a.Code.String(), "reason", a.Detail)
			}
		}
		if clean {
			d.log.Info("egress self-check passed", "address", r.ClientIP.String(), "helo", helo)
		}
	}
}

func (d *daemon) source() string {
	if d.path == "" {
		return "built-in"
	}
	return d.path
}

func (d *daemon) newEngine(c *config.Config, prev *policy.Engine) (*policy.Engine, error) {
	pc := c.Engine()
	pc.Observer = d.metrics
	if d.shared != nil { // a nil *Redis would make a non-nil SharedCache
		pc.Shared = d.shared
	}
	if prev == nil {
		return policy.New(pc)
	}
	return policy.Reconfigure(prev, pc)
}

func (d *daemon) milterConfig(c *config.Config, engine *policy.Engine) *milter.Config {
	return &milter.Config{Engine: engine, HeaderName: c.Header.Name, DecisionTimeout: c.DecisionTimeout.D,
		NonSMTPAction: c.Milter.NonSMTPAction.Verdict()}
}

// reload applies the configuration file again; a file that does not load
// leaves everything as it was.
func (d *daemon) reload() error {
	cfg, err := loadConfig(d.path)
	if err == nil && d.api != nil && cfg.API.Token == "" && d.started.API.Exposed() {
		// api.listen changes only on restart: the open listener keeps its
		// address, so it keeps needing a token.
		err = fmt.Errorf("api.token: the check API listens on %s until a restart, which needs a token", d.started.API.Listen)
	}
	var milterPeers, policyPeers *peers.Allow
	if err == nil {
		milterPeers, policyPeers, err = allowedPeers(cfg)
	}
	if err == nil {
		var engine *policy.Engine
		if engine, err = d.newEngine(cfg, d.engine.Load()); err == nil {
			d.milterPeers.Store(milterPeers)
			d.policyPeers.Store(policyPeers)
			d.warnRestartOnly(cfg)
			d.engine.Store(engine)
			if d.milter != nil {
				d.milter.Reload(d.milterConfig(cfg, engine))
			}
			if d.policy != nil {
				d.policy.Reload(d.policyConfig(cfg, engine))
			}
			if d.api != nil {
				d.api.Reload(d.apiConfig(cfg, engine))
			}
			setLevel(d.level, cfg.Log.Level)
			d.cfg = cfg
			d.metrics.Reload(true)
			d.log.Info("configuration reloaded", "config", d.source())
			return nil
		}
	}
	d.metrics.Reload(false)
	d.log.Error("configuration reload failed; still running the previous configuration", "error", err)
	return err
}

// warnRestartOnly names the settings that differ from those mxguard started
// with and that only a restart applies.
func (d *daemon) warnRestartOnly(next *config.Config) {
	old := d.started
	for key, changed := range map[string]bool{
		"milter.listen":                  old.Milter.Listen != next.Milter.Listen,
		"milter.socket_mode":             old.Milter.SocketMode != next.Milter.SocketMode,
		"milter.max_sessions":            old.Milter.MaxSessions != next.Milter.MaxSessions,
		"milter.idle_timeout":            old.Milter.IdleTimeout != next.Milter.IdleTimeout,
		"milter.transaction_timeout":     old.Milter.TransactionTimeout != next.Milter.TransactionTimeout,
		"policy_service.listen":          old.PolicyService.Listen != next.PolicyService.Listen,
		"policy_service.max_connections": old.PolicyService.MaxConnections != next.PolicyService.MaxConnections,
		"policy_service.idle_timeout":    old.PolicyService.IdleTimeout != next.PolicyService.IdleTimeout,
		"outbound.self_check_interval":   old.Outbound.SelfCheckInterval != next.Outbound.SelfCheckInterval,
		"cache.shared.url":               old.Cache.Shared.URL != next.Cache.Shared.URL,
		"cache.shared.timeout":           old.Cache.Shared.Timeout != next.Cache.Shared.Timeout,
		"metrics.listen":                 old.Metrics.Listen != next.Metrics.Listen,
		"api.listen":                     old.API.Listen != next.API.Listen,
		"api.max_concurrency":            old.API.MaxConcurrency != next.API.MaxConcurrency,
		"checks.header_from":             old.Checks.HeaderFrom != next.Checks.HeaderFrom,
		"checks.message":                 old.Checks.Message != next.Checks.Message,
		"milter.reply_at":                old.Milter.ReplyAt != next.Milter.ReplyAt,
		"log.format":                     old.Log.Format != next.Log.Format,
	} {
		if changed {
			d.log.Warn("this setting changes only on restart", "key", key)
		}
	}
}

func (d *daemon) shutdown(sig os.Signal, served <-chan error, httpSrv *http.Server) error {
	d.serving.Store(false)
	drain := d.cfg.Milter.DrainTimeout.D
	sessions := 0
	for _, f := range d.fronts {
		sessions += f.active()
	}
	d.log.Info("draining sessions", "signal", sig.String(), "sessions", sessions, "timeout", drain)
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// In parallel: every listener closes at once, and each front end has
	// the whole drain time, not what the one before it left.
	errs := make(chan error, len(d.fronts))
	for _, f := range d.fronts {
		go func() { errs <- f.shutdown(ctx) }()
	}
	var err error
	for range d.fronts {
		err = errors.Join(err, <-errs)
	}
	for range d.fronts {
		<-served
	}
	if httpSrv != nil {
		httpSrv.Shutdown(context.Background())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		d.log.Warn("drain timeout: closed the sessions still open")
		err = nil
	}
	d.log.Info("mxguard stopped")
	return err
}

// frontEnd is a protocol mxguard serves the engine on.
type frontEnd struct {
	active   func() int
	shutdown func(context.Context) error
}

// startFrontEnds opens the milter, the policy service and the check API,
// whichever are configured; each reports on served when it stops serving.
// On an error, d.fronts holds those that did open.
func (d *daemon) startFrontEnds(engine *policy.Engine, served chan<- error) error {
	c := d.cfg
	if c.Milter.Listen.Spec != "" {
		replyAt := milter.StageRcpt
		if c.Milter.ReplyAt == "mail" {
			replyAt = milter.StageMail
		}
		d.milter = milter.New(d.milterConfig(c, engine), milter.Options{
			HeaderFrom:         c.Checks.HeaderFrom,
			Message:            c.Checks.Message,
			ReplyAt:            replyAt,
			MaxSessions:        c.Milter.MaxSessions,
			IdleTimeout:        c.Milter.IdleTimeout.D,
			TransactionTimeout: c.Milter.TransactionTimeout.D,
			AllowPeer:          peers.Checker(d.milterPeers.Load),
			Seen:               d.inventory.Record,
			Log:                d.log,
			Recorder:           d.metrics,
		})
		ln, err := listen("milter.listen", c.Milter.Listen, c.Milter.SocketMode.M)
		if err != nil {
			return err
		}
		go func() { served <- fmt.Errorf("milter listener: %w", d.milter.Serve(ln)) }()
		d.fronts = append(d.fronts, frontEnd{d.milter.ActiveSessions, d.milter.Shutdown})
	}
	if c.PolicyService.Listen.Spec != "" {
		d.policy = postfixpolicy.New(d.policyConfig(c, engine), postfixpolicy.Options{
			MaxConns:    c.PolicyService.MaxConnections,
			IdleTimeout: c.PolicyService.IdleTimeout.D,
			AllowPeer:   peers.Checker(d.policyPeers.Load),
			Seen:        d.inventory.Record,
			Log:         d.log,
			Recorder:    d.metrics,
		})
		ln, err := listen("policy_service.listen", c.PolicyService.Listen, c.Milter.SocketMode.M)
		if err != nil {
			return err
		}
		go func() { served <- fmt.Errorf("policy service listener: %w", d.policy.Serve(ln)) }()
		d.fronts = append(d.fronts, frontEnd{d.policy.ActiveConns, d.policy.Shutdown})
	}
	if c.API.Listen != "" {
		ln, err := net.Listen("tcp", c.API.Listen)
		if err != nil {
			return fmt.Errorf("api.listen %s: %w", c.API.Listen, err)
		}
		d.api = checkapi.New(d.apiConfig(c, engine), checkapi.Options{
			MaxConcurrency: c.API.MaxConcurrency,
			Log:            d.log,
			Recorder:       d.metrics.WatchAPI(),
		})
		go func() { served <- fmt.Errorf("check API listener: %w", d.api.Serve(ln)) }()
		d.fronts = append(d.fronts, frontEnd{d.api.ActiveRequests, d.api.Shutdown})
	}
	return nil
}

// allowedPeers resolves milter.allow_users and policy_service.allow_users
// (validated when the file loaded, but users can change since).
func allowedPeers(c *config.Config) (milter, policy *peers.Allow, err error) {
	if milter, err = peers.ParseAllow(c.Milter.AllowUsers); err != nil {
		return nil, nil, fmt.Errorf("milter.allow_users: %w", err)
	}
	if policy, err = peers.ParseAllow(c.PolicyService.AllowUsers); err != nil {
		return nil, nil, fmt.Errorf("policy_service.allow_users: %w", err)
	}
	return milter, policy, nil
}

func (d *daemon) apiConfig(c *config.Config, engine *policy.Engine) *checkapi.Config {
	api := &checkapi.Config{Engine: engine, Token: c.API.Token, Rate: c.API.Rate, DecisionTimeout: c.DecisionTimeout.D,
		Inventory: d.inventory.Store()}
	if c.API.Token == "" { // the console signs in with the token
		return api
	}
	cc := &console.Config{Token: c.API.Token, Inventory: d.inventory.Store(),
		Record: func(ctx context.Context, b []inventory.Sighting) error {
			_, err := d.inventory.Apply(ctx, b)
			return err
		}}
	if d.console == nil {
		d.console = console.New(cc, console.Options{Log: d.log})
	} else {
		d.console.Reload(cc)
	}
	api.Console = d.console
	return api
}

// openInventory opens the domain inventory: the fleet's with a fleet
// cache, else this host's file. A file that cannot be opened is logged and
// the inventory kept in memory: it never stops mail.
func (d *daemon) openInventory() error {
	c := d.cfg.Inventory
	var store inventory.Store
	if d.shared != nil {
		store = inventory.NewRedis(d.shared.Client, d.cfg.Cache.Shared.Prefix, c.MaxDomains, 5*time.Second)
	} else {
		l, err := inventory.OpenLocal(c.Path, c.MaxDomains, c.MaxBytes, true, d.log)
		if err != nil { // another mxguard's, or a directory it may not write
			d.log.Error("the inventory file cannot be used; keeping the inventory in memory", "error", err)
			l, _ = inventory.OpenLocal("", c.MaxDomains, c.MaxBytes, false, d.log)
		}
		store = l
	}
	var send func([]inventory.Notice)
	if d.cfg.Notify.Webhook.URL != "" {
		hook, err := startWebhook(d.cfg, d.log, d.metrics.WatchNotify())
		if err != nil {
			return err
		}
		d.webhook, send = hook, hook.Send
	}
	d.inventory = inventory.New(store, inventory.Options{SaveEvery: c.SaveInterval.D, Notify: send, Log: d.log})
	d.metrics.WatchInventory(d.inventory)
	return nil
}

func (d *daemon) closeInventory() {
	if err := d.inventory.Close(); err != nil {
		d.log.Error("saving the inventory failed", "error", err)
	}
	if d.webhook != nil {
		d.webhook.Close()
	}
}

// startWebhook starts notify.webhook; record counts its outcomes (nil: not
// counted).
func startWebhook(c *config.Config, log *slog.Logger, record func(string)) (*notify.Webhook, error) {
	w := c.Notify.Webhook
	return notify.Start(notify.Config{URL: w.URL, Secret: w.Secret, AllowPrivate: w.AllowPrivate, Timeout: w.Timeout.D,
		Retries: w.Retries, Log: log, Recorder: record})
}

// auditEvery audits the inventory every interval in the background, with
// the engine serving at the time, and logs what changed.
func (d *daemon) auditEvery(interval time.Duration) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			var domains []string
			store := d.inventory.Store()
			if err := store.Domains(ctx, time.Time{}, func(s string) error { domains = append(domains, s); return nil }); err != nil {
				d.log.Warn("inventory audit: reading the inventory failed", "error", err)
				continue
			}
			changes := map[string]int{}
			began := time.Now()
			err := auditDomains(ctx, d.engine.Load(), store, domains, d.cfg.Inventory.AuditConcurrency,
				func(ctx context.Context, b []inventory.Sighting) error {
					_, err := d.inventory.Apply(ctx, b)
					return err
				},
				func(a auditResult) { changes[a.change]++ })
			if ctx.Err() != nil {
				return
			}
			d.log.Info("inventory audit", "domains", len(domains), "new", changes["new"], "newly_failing", changes["newly-failing"],
				"fixed", changes["fixed"], "still_failing", changes["still-failing"], "unchanged", changes["unchanged"],
				"took", time.Since(began).Round(time.Millisecond), "error", err)
		}
	}()
	return func() { cancel(); <-done }
}

func (d *daemon) policyConfig(c *config.Config, engine *policy.Engine) *postfixpolicy.Config {
	return &postfixpolicy.Config{Engine: engine, HeaderName: c.Header.Name, DecisionTimeout: c.DecisionTimeout.D}
}

func (d *daemon) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.metrics.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.serving.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// listen opens the milter socket. A stale unix socket left by a crash is
// removed; a live one (another mxguard) is an error.
func listen(key string, s config.Socket, mode os.FileMode) (net.Listener, error) {
	if s.Network != "unix" {
		ln, err := net.Listen(s.Network, s.Address)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", key, s.Spec, err)
		}
		return ln, nil
	}
	if fi, err := os.Lstat(s.Address); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s %s: the path exists and is not a socket", key, s.Spec)
		}
		if c, err := net.DialTimeout("unix", s.Address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s %s: something is already listening there", key, s.Spec)
		}
		os.Remove(s.Address)
	}
	old := syscall.Umask(0o777 &^ int(mode.Perm())) // no window with looser permissions
	ln, err := net.Listen("unix", s.Address)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, s.Spec, err)
	}
	if err := os.Chmod(s.Address, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s %s: %w", key, s.Spec, err)
	}
	return ln, nil
}

// slogWriter sends standard-library log lines to slog: go-milter's, one
// per connection it gives up on. A peer's flood of broken connections would
// be a flood of lines, so each kind of line (its text up to the first
// colon) is written at most once a minute, with a count of the rest.
type slogWriter struct {
	log      *slog.Logger
	throttle *peers.LogThrottle
}

func newSlogWriter(l *slog.Logger) slogWriter {
	return slogWriter{log: l, throttle: peers.NewLogThrottle(time.Minute)}
}

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(trimNewline(p))
	kind, _, _ := strings.Cut(line, ":")
	if ok, suppressed := w.throttle.Allow(kind, time.Now()); ok {
		w.log.Warn(line, "source", "go-milter", "like_it_since_last_line", suppressed)
	}
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
