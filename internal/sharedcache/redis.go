// Package sharedcache is mxguard's fleet cache on Redis or Valkey
// (policy.SharedCache). It is an accelerator, never a dependency: every call
// is bounded by its timeout, failures are misses, writes are queued and
// dropped rather than waited for, a circuit breaker stops asking a server
// that keeps failing, and nothing waits for the first connection.
package sharedcache

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Redis is a policy.SharedCache on a Redis or Valkey server.
//
// The client is github.com/redis/rueidis: one multiplexed connection per
// server with automatic pipelining, so a burst of concurrent lookups from
// every session costs one round trip, not one connection each.
type Redis struct {
	opt      rueidis.ClientOption
	where    string // the URL without its password, for logs
	timeout  time.Duration
	log      *slog.Logger
	mu       sync.Mutex
	client   rueidis.Client // nil until the first connection
	breaker  breaker
	writes   chan command
	closed   chan struct{}
	wg       sync.WaitGroup
	errs     atomic.Uint64
	dropped  atomic.Uint64
	unlocker *rueidis.Lua
}

type command struct {
	key, value string
	ttl        time.Duration
}

// writeQueue bounds the writes waiting for the server; beyond it they are
// dropped: a slow server must not hold memory or decisions.
const writeQueue = 4096

// ParseURL reads a cache.shared.url, by rueidis's rules but for the host
// lists (README, "Running a fleet"):
//
//	redis://[user:password@]host:port[,host:port...]/db   (rediss:// for TLS)
//	unix://[user:password@]/path/to/redis.sock[?db=N]
//	redis-sentinel://[user:password@]host:port[,host:port...]/db?master_name=NAME[&sentinel_password=PW]
//
// Several redis:// hosts are seeds of a Redis or Valkey Cluster (which has
// only database 0); one host is a server or any node of a cluster, told
// apart on connecting. The redis-sentinel:// hosts are the Sentinels, the
// password the master's. The configuration's validation calls it too, so a
// URL that validates is one New takes. Its errors never show a password.
func ParseURL(raw string) (rueidis.ClientOption, error) {
	p, err := split(raw)
	if err != nil {
		return rueidis.ClientOption{}, err
	}
	u, err := url.Parse(p.single())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold the password
		}
		return rueidis.ClientOption{}, err
	}
	q := u.Query()
	if q.Has("master_set") {
		return rueidis.ClientOption{}, errors.New("master_set: for Sentinel, use redis-sentinel://host:port,.../db?master_name=NAME")
	}
	var sentinel rueidis.SentinelOption
	switch u.Scheme {
	case "redis", "rediss":
	case "unix":
		if len(p.hosts) > 1 {
			return rueidis.ClientOption{}, errors.New("unix:// takes one socket path")
		}
	case sentinelScheme:
		if sentinel.MasterSet = q.Get("master_name"); sentinel.MasterSet == "" {
			return rueidis.ClientOption{}, errors.New("redis-sentinel:// needs ?master_name=NAME, the master's name in the Sentinels' configuration")
		}
		sentinel.Password = q.Get("sentinel_password")
		q.Del("master_name")
		q.Del("sentinel_password")
		u.Scheme, u.RawQuery = "redis", q.Encode()
	default:
		return rueidis.ClientOption{}, fmt.Errorf("scheme %q: want redis://host:port/db, rediss://host:port/db, redis-sentinel://host:port/db?master_name=NAME or unix:///path", u.Scheme)
	}
	opt, err := rueidis.ParseURL(u.String())
	if err != nil {
		return opt, err
	}
	if len(p.hosts) > 1 && p.hosts[0] == "" {
		return opt, errors.New("an empty host in the host list")
	}
	for _, h := range p.hosts[1:] {
		if opt.InitAddress, err = appendAddr(opt.InitAddress, h); err != nil {
			return opt, err
		}
	}
	opt.Sentinel = sentinel
	if sentinel.MasterSet == "" && len(opt.InitAddress) > 1 && opt.SelectDB != 0 {
		return opt, fmt.Errorf("database %d: several hosts are a cluster, which has only database 0", opt.SelectDB)
	}
	return opt, nil
}

const sentinelScheme = "redis-sentinel"

// urlParts is a URL whose authority may list several hosts, which
// net/url does not take (an IPv6 literal among them fails as a port).
type urlParts struct {
	scheme, userinfo string // userinfo with its "@"
	hosts            []string
	tail             string // path, query, fragment
}

func split(raw string) (urlParts, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return urlParts{}, errors.New("want a URL such as redis://host:6379/0")
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	at := strings.LastIndexByte(authority, '@') + 1
	return urlParts{scheme: scheme, userinfo: authority[:at], hosts: strings.Split(authority[at:], ","), tail: rest[end:]}, nil
}

// single is the URL with its first host only.
func (p urlParts) single() string { return p.scheme + "://" + p.userinfo + p.hosts[0] + p.tail }

// appendAddr adds host:port (port 6379 when left out) to addrs.
func appendAddr(addrs []string, hostport string) ([]string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), "6379"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return addrs, fmt.Errorf("host %q: invalid port %q", host, port)
	}
	if host == "" {
		return addrs, errors.New("an empty host in the host list")
	}
	return append(addrs, net.JoinHostPort(host, port)), nil
}

// New validates rawURL and starts connecting in the background.
func New(rawURL string, timeout time.Duration, log *slog.Logger) (*Redis, error) {
	opt, err := ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cache.shared.url: %w", err)
	}
	opt.DisableCache = true // server-assisted client caching: mxguard has its own level
	opt.DisableRetry = true // each call has its own timeout and a fallback
	opt.Dialer.Timeout = max(timeout, time.Second)
	opt.ConnWriteTimeout = max(4*timeout, 2*time.Second) // a server that stops answering is noticed
	opt.ShuffleInit = true                               // a fleet's nodes do not all ask the first seed
	if opt.Sentinel.MasterSet != "" {
		opt.Sentinel.Dialer.Timeout = opt.Dialer.Timeout
		// Besides the Sentinels' +switch-master, in case one is missed.
		opt.Sentinel.TopologyRefreshInterval = 5 * time.Second
	}
	r := &Redis{
		opt:     opt,
		where:   Redact(rawURL),
		timeout: timeout,
		log:     log,
		writes:  make(chan command, writeQueue),
		closed:  make(chan struct{}),
		// Release a probe lock only while it is still ours.
		unlocker: rueidis.NewLuaScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`),
	}
	r.breaker.init()
	r.wg.Add(2)
	go r.connect()
	go r.writer()
	return r, nil
}

// connect makes the client, retrying until it works or Close.
func (r *Redis) connect() {
	defer r.wg.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 30*time.Second) {
		c, err := rueidis.NewClient(r.opt)
		if err == nil {
			r.mu.Lock()
			r.client = c
			r.mu.Unlock()
			r.log.Info("shared cache connected", "url", r.where)
			return
		}
		r.log.Warn("shared cache unreachable; deciding from the local cache, retrying", "url", r.where, "error", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-r.closed:
			return
		}
	}
}

func (r *Redis) conn() rueidis.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client
}

// call runs fn on the client within timeout, through the breaker, and
// tells the breaker how it went; false when it did not run or failed. Every
// command goes through here: a half-open breaker waits for the outcome of
// its one trial, so a call that did not report it would keep it open.
func (r *Redis) call(ctx context.Context, timeout time.Duration, fn func(context.Context, rueidis.Client) error) bool {
	c := r.conn()
	if c == nil {
		return false
	}
	report, ok := r.breaker.allow()
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(ctx, c)
	if err == nil {
		report(succeeded)
		return true
	}
	// A stalled server: one wait is all a decision may add. rueidis may
	// give up on the deadline just before the context says it has.
	o := failed
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		o = stalled
	}
	r.errs.Add(1)
	if report(o) {
		r.log.Warn("shared cache failing; not asking it for a while", "url", r.where, "error", err)
	}
	return false
}

// do runs one command within the timeout; a false ok when it did not run
// or failed.
func (r *Redis) do(ctx context.Context, build func(c rueidis.Client) rueidis.Completed) (res rueidis.RedisResult, ok bool) {
	ok = r.call(ctx, r.timeout, func(ctx context.Context, c rueidis.Client) error {
		res = c.Do(ctx, build(c))
		if err := res.Error(); !rueidis.IsRedisNil(err) {
			return err
		}
		return nil
	})
	return res, ok
}

// Get returns the first limit octets of the value under key: GETRANGE, so
// that a hostile value never crosses the wire whole. A missing key (an
// empty value to GETRANGE), a failure or an open breaker are all a miss.
func (r *Redis) Get(ctx context.Context, key string, limit int) ([]byte, bool) {
	res, ok := r.do(ctx, func(c rueidis.Client) rueidis.Completed {
		return c.B().Getrange().Key(key).Start(0).End(int64(limit) - 1).Build()
	})
	if !ok {
		return nil, false
	}
	b, err := res.AsBytes()
	return b, err == nil && len(b) > 0
}

// Set queues a write of value under key for ttl; it never blocks.
func (r *Redis) Set(key string, value []byte, ttl time.Duration) {
	if ttl < time.Millisecond {
		return
	}
	select {
	case r.writes <- command{key, string(value), ttl}:
	default:
		r.dropped.Add(1)
	}
}

// writer sends queued writes, many to a round trip.
func (r *Redis) writer() {
	defer r.wg.Done()
	for {
		var batch []command
		select {
		case w := <-r.writes:
			batch = append(batch, w)
		case <-r.closed:
			return
		}
	more:
		for len(batch) < 128 {
			select {
			case w := <-r.writes:
				batch = append(batch, w)
			default:
				break more
			}
		}
		ran := false
		r.call(context.Background(), 4*r.timeout, func(ctx context.Context, c rueidis.Client) error {
			ran = true
			cmds := make(rueidis.Commands, len(batch))
			for i, w := range batch {
				cmds[i] = c.B().Set().Key(w.key).Value(w.value).PxMilliseconds(w.ttl.Milliseconds()).Build()
			}
			var err error
			for _, res := range c.DoMulti(ctx, cmds...) {
				err = cmp.Or(err, res.Error())
			}
			return err
		})
		if !ran {
			r.dropped.Add(uint64(len(batch)))
		}
	}
}

// Lock takes key for ttl with SET NX PX. mine is true when this caller holds
// it, and also when the server cannot say: then nothing is locked and the
// caller goes ahead on its own rather than wait for nobody.
func (r *Redis) Lock(ctx context.Context, key string, ttl time.Duration) (unlock func(), mine bool) {
	token := newToken()
	res, ok := r.do(ctx, func(c rueidis.Client) rueidis.Completed {
		return c.B().Set().Key(key).Value(token).Nx().PxMilliseconds(ttl.Milliseconds()).Build()
	})
	if !ok {
		return func() {}, true
	}
	if s, err := res.ToString(); err != nil || s != "OK" {
		return func() {}, false // another node holds it
	}
	return func() {
		r.call(context.Background(), r.timeout, func(ctx context.Context, c rueidis.Client) error {
			return r.unlocker.Exec(ctx, c, []string{key}, []string{token}).Error()
		})
	}, true
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Up reports whether the cache is connected and its breaker closed.
func (r *Redis) Up() bool { return r.conn() != nil && r.breaker.closed() }

// Errors counts failed commands; Dropped counts writes not sent.
func (r *Redis) Errors() uint64  { return r.errs.Load() }
func (r *Redis) Dropped() uint64 { return r.dropped.Load() }

// Close stops the background work and the client.
func (r *Redis) Close() {
	close(r.closed)
	r.wg.Wait()
	if c := r.conn(); c != nil {
		c.Close()
	}
}

// breaker opens after a run of failures and stays open for a cool-down
// that doubles up to a minute; then one call tries again.
type breaker struct {
	mu       sync.Mutex
	failures int
	openTill time.Time
	cooldown time.Duration
	trying   bool
}

const (
	breakerFailures = 5
	breakerMin      = time.Second
	breakerMax      = time.Minute
)

func (b *breaker) init() { b.cooldown = breakerMin }

// outcome is how a call that the breaker let through went.
type outcome int

const (
	succeeded outcome = iota
	failed            // an error: five in a row open the breaker
	stalled           // no answer within the timeout: opens it at once
)

// allow says whether a call may go to the server. When it may, the caller
// must report its outcome, once; report says whether that opened the
// breaker.
func (b *breaker) allow() (report func(outcome) (opened bool), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	trial := !b.openTill.IsZero()
	if trial {
		if time.Now().Before(b.openTill) || b.trying {
			return nil, false
		}
		b.trying = true // half open: this call tries
	}
	return func(o outcome) bool { return b.report(o, trial) }, true
}

func (b *breaker) report(o outcome, trial bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o == succeeded {
		b.failures, b.openTill, b.cooldown, b.trying = 0, time.Time{}, breakerMin, false
		return false
	}
	b.failures++
	switch {
	case trial: // the trial failed: stay open, longer
		b.cooldown = min(2*b.cooldown, breakerMax)
	case !b.openTill.IsZero(): // opened meanwhile by another call
		return false
	case o == failed && b.failures < breakerFailures:
		return false
	}
	b.openTill, b.trying = time.Now().Add(b.cooldown), false
	return true
}

func (b *breaker) closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openTill.IsZero()
}

// Redact is raw without its passwords, for logs.
func Redact(raw string) string {
	p, err := split(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u, err := url.Parse(p.single())
	if err != nil {
		return "(unparsable URL)"
	}
	u.Host = strings.Join(p.hosts, ",")
	if q := u.Query(); q.Has("sentinel_password") {
		q.Set("sentinel_password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Client is the connection to the fleet's server, nil until it is made:
// the fleet's domain inventory uses it too.
func (r *Redis) Client() rueidis.Client { return r.conn() }
