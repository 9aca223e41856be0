// Package sharedcache is mxguard's fleet cache on Redis or Valkey
// (policy.SharedCache). It is an accelerator, never a dependency: every call
// is bounded by its timeout, failures are misses, writes are queued and
// dropped rather than waited for, a circuit breaker stops asking a server
// that keeps failing, and nothing waits for the first connection.
package sharedcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
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

// New validates rawURL and starts connecting in the background.
func New(rawURL string, timeout time.Duration, log *slog.Logger) (*Redis, error) {
	opt, err := rueidis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cache.shared.url: %w", err)
	}
	opt.DisableCache = true // server-assisted client caching: mxguard has its own level
	opt.DisableRetry = true // each call has its own timeout and a fallback
	opt.Dialer.Timeout = max(timeout, time.Second)
	opt.ConnWriteTimeout = max(4*timeout, 2*time.Second) // a server that stops answering is noticed
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

// do runs one command within the timeout, through the breaker; nil result
// and a false ok when it did not run or failed.
func (r *Redis) do(ctx context.Context, build func(c rueidis.Client) rueidis.Completed) (rueidis.RedisResult, bool) {
	c := r.conn()
	if c == nil || !r.breaker.allow() {
		return rueidis.RedisResult{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	res := c.Do(ctx, build(c))
	if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
		if ctx.Err() != nil { // a stalled server: one wait is all a decision may add
			r.breaker.trip()
		}
		r.failed(err)
		return res, false
	}
	r.breaker.success()
	return res, true
}

func (r *Redis) failed(err error) {
	r.errs.Add(1)
	if r.breaker.failure() {
		r.log.Warn("shared cache failing; not asking it for a while", "url", r.where, "error", err)
	}
}

// Get returns the value under key; a missing key, a failure or an open
// breaker are all a miss.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool) {
	res, ok := r.do(ctx, func(c rueidis.Client) rueidis.Completed { return c.B().Get().Key(key).Build() })
	if !ok {
		return nil, false
	}
	b, err := res.AsBytes()
	return b, err == nil
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
		c := r.conn()
		if c == nil || !r.breaker.allow() {
			r.dropped.Add(uint64(len(batch)))
			continue
		}
		cmds := make(rueidis.Commands, len(batch))
		for i, w := range batch {
			cmds[i] = c.B().Set().Key(w.key).Value(w.value).PxMilliseconds(w.ttl.Milliseconds()).Build()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*r.timeout)
		failed := error(nil)
		for _, res := range c.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				failed = err
			}
		}
		cancel()
		if failed != nil {
			r.failed(failed)
		} else {
			r.breaker.success()
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
		if c := r.conn(); c != nil && r.breaker.allow() {
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			r.unlocker.Exec(ctx, c, []string{key}, []string{token})
		}
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

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openTill.IsZero() {
		return true
	}
	if time.Now().Before(b.openTill) || b.trying {
		return false
	}
	b.trying = true // half open: this call tries
	return true
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.openTill, b.cooldown, b.trying = 0, time.Time{}, breakerMin, false
}

// failure counts a failure and reports whether it opened the breaker.
func (b *breaker) failure() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.trying || b.openTill.IsZero() && b.failures >= breakerFailures {
		if b.trying {
			b.cooldown = min(2*b.cooldown, breakerMax)
		}
		b.openTill, b.trying = time.Now().Add(b.cooldown), false
		return true
	}
	return false
}

// trip opens the breaker at once.
func (b *breaker) trip() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openTill.IsZero() || b.trying {
		b.openTill, b.trying = time.Now().Add(b.cooldown), false
	}
}

func (b *breaker) closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openTill.IsZero()
}

// Redact is raw without its password, for logs.
func Redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Client is the connection to the fleet's server, nil until it is made:
// the fleet's domain inventory uses it too.
func (r *Redis) Client() rueidis.Client { return r.conn() }
