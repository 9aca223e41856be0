package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Redis is the inventory of a fleet, in Redis or Valkey: every node adds
// what it saw, and any node's audit or API sees every domain.
//
// Layout (all keys under the fleet's prefix and the hash tag {inv}, so that
// a cluster keeps them on one node and a script may touch them together):
//
//	{inv}:d             hash of the entries by domain, JSON (one hash, not a
//	                    key per domain: a key costs its name and a header more)
//	{inv}:seen          zset of domains by last seen (ms): bounds the inventory
//	{inv}:order         zset of domains by last verdict change (ms): lists
//	{inv}:v:VERDICT     zset of the domains with that verdict (but pass: most
//	                    domains pass, and order less the others is them), by change
//	{inv}:c:CHECK       zset of the domains with a finding of that check
//
// An entry is changed by compare-and-set: read, apply (the same apply as
// the local inventory), and write only if nobody wrote it in between, so
// that of two nodes seeing a change at once only one reports it (and a
// change is notified once, not once per node).
type Redis struct {
	conn       func() rueidis.Client // nil until the fleet's server is reached
	prefix     string
	maxDomains int
	timeout    time.Duration
	cas        *rueidis.Lua
}

// NewRedis keeps the inventory with the client conn returns (the fleet
// cache's), under prefix (cache.shared.prefix).
func NewRedis(conn func() rueidis.Client, prefix string, maxDomains int, timeout time.Duration) *Redis {
	return &Redis{conn: conn, prefix: prefix + "{inv}:", maxDomains: maxDomains, timeout: timeout,
		cas: rueidis.NewLuaScript(casScript)}
}

// ErrNotConnected is the fleet's server not reached yet.
var ErrNotConnected = errors.New("the fleet's Redis is not connected yet")

func (r *Redis) client() (rueidis.Client, error) {
	if c := r.conn(); c != nil {
		return c, nil
	}
	return nil, ErrNotConnected
}

// casScript writes an entry if it is still what the caller read, moves
// the domain between the index sets, and trims the least recently seen
// domains beyond the bound.
//
// KEYS: entries, seen, order. ARGV: the JSON read ("" for none), the new
// JSON, domain, change ms, seen ms, old verdict, new verdict, old checks,
// new checks (space-separated), key prefix, max domains.
const casScript = `
local cur = redis.call('HGET', KEYS[1], ARGV[3]) or ''
if cur ~= ARGV[1] then return 0 end
local p, d = ARGV[10], ARGV[3]
redis.call('HSET', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], d)
redis.call('ZADD', KEYS[3], ARGV[4], d)
if ARGV[6] ~= '' and ARGV[6] ~= 'pass' then redis.call('ZREM', p .. 'v:' .. ARGV[6], d) end
if ARGV[7] ~= '' and ARGV[7] ~= 'pass' then redis.call('ZADD', p .. 'v:' .. ARGV[7], ARGV[4], d) end
for c in string.gmatch(ARGV[8], '%S+') do redis.call('ZREM', p .. 'c:' .. c, d) end
for c in string.gmatch(ARGV[9], '%S+') do redis.call('ZADD', p .. 'c:' .. c, ARGV[4], d) end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[11])
if over > 0 then
	for _, old in ipairs(redis.call('ZPOPMIN', KEYS[2], over)) do
		if old ~= d and not tonumber(old) then
			local v = redis.call('HGET', KEYS[1], old)
			if v then
				local ok, e = pcall(cjson.decode, v)
				if ok and type(e) == 'table' then
					if e.v and e.v ~= 'pass' then redis.call('ZREM', p .. 'v:' .. e.v, old) end
					if type(e.f) == 'table' then
						for _, f in ipairs(e.f) do redis.call('ZREM', p .. 'c:' .. tostring(f.i), old) end
					end
				end
			end
			redis.call('HDEL', KEYS[1], old)
			redis.call('ZREM', KEYS[3], old)
		end
	end
end
return 1
`

// casTries bounds the retries of one entry when other nodes keep writing it.
const casTries = 8

// maxEntryJSON bounds an entry read back: the fleet's store is shared, so
// what it holds is checked like any input.
const maxEntryJSON = 64 << 10

func (r *Redis) entries() string { return r.prefix + "d" }

// Apply records a batch and returns the verdict changes it made.
func (r *Redis) Apply(ctx context.Context, batch []Sighting) ([]Notice, error) {
	client, err := r.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var notices []Notice
	pending := batch
	for try := 0; len(pending) > 0 && try < casTries; try++ {
		current, raw, err := r.getMany(ctx, client, domainsOf(pending))
		if err != nil {
			return notices, err
		}
		execs := make([]rueidis.LuaExec, len(pending))
		changes := make([]*Change, len(pending))
		for i, s := range pending {
			e, ch := apply(current[i], s)
			changes[i] = ch
			stored := *e
			stored.Domain = "" // the hash field says it
			next, err := json.Marshal(&stored)
			if err != nil {
				return notices, err
			}
			oldVerdict, oldChecks := "", ""
			if current[i] != nil {
				oldVerdict, oldChecks = current[i].Verdict, checkIDs(current[i])
			}
			execs[i] = rueidis.LuaExec{
				Keys: []string{r.entries(), r.prefix + "seen", r.prefix + "order"},
				Args: []string{raw[i], string(next), s.Domain, ms(e.Changed), ms(e.LastSeen), oldVerdict, e.Verdict,
					oldChecks, checkIDs(e), r.prefix, strconv.Itoa(r.maxDomains)},
			}
		}
		var retry []Sighting
		for i, res := range r.cas.ExecMulti(ctx, client, execs...) {
			written, err := res.AsInt64()
			switch {
			case err != nil:
				return notices, err
			case written == 0: // another node wrote it since: read again
				retry = append(retry, pending[i])
			case changes[i] != nil:
				notices = append(notices, Notice{Domain: pending[i].Domain, Change: *changes[i]})
			}
		}
		pending = retry
	}
	if len(pending) > 0 {
		return notices, fmt.Errorf("inventory: %d domains kept changing under other nodes' writes", len(pending))
	}
	return notices, nil
}

// Get returns the entry of domain; nil when it was never seen.
func (r *Redis) Get(ctx context.Context, domain string) (*Entry, error) {
	client, err := r.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	s, err := client.Do(ctx, client.B().Hget().Key(r.entries()).Field(domain).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeEntry(domain, s)
}

// List returns the entries q selects, newest change first, and the cursor
// of the next page.
func (r *Redis) List(ctx context.Context, q Query) ([]*Entry, string, error) {
	after, err := parseCursor(q.Cursor)
	if err != nil {
		return nil, "", err
	}
	client, err := r.client()
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	index := r.prefix + "order"
	switch {
	case q.Check != "":
		index = r.prefix + "c:" + q.Check
	case q.Verdict != "" && q.Verdict != "pass":
		index = r.prefix + "v:" + q.Verdict
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1 << 30
	}
	max := "+inf"
	if after.set {
		max = strconv.FormatInt(after.changed/int64(time.Millisecond), 10)
	}
	// The index is read a chunk at a time: as many as the page wants, then
	// twice as many each time (the filter and the cursor skip some), up to
	// listChunk, so that a page of 50 reads about 50 entries, not 512.
	var page []*Entry
	chunk := int64(min(limit+1, listChunk))
	for offset := int64(0); len(page) <= limit; offset, chunk = offset+chunk, min(2*chunk, listChunk) {
		members, err := client.Do(ctx, client.B().Zrange().Key(index).Min(max).Max("-inf").Byscore().Rev().
			Limit(offset, chunk).Build()).AsStrSlice()
		if err != nil {
			return nil, "", err
		}
		if len(members) == 0 {
			break
		}
		entries, _, err := r.getMany(ctx, client, members)
		if err != nil {
			return nil, "", err
		}
		for _, e := range entries {
			if e != nil && q.matches(e) && after.before(e) {
				page = append(page, e)
			}
		}
		if int64(len(members)) < chunk {
			break
		}
	}
	return paginate(page, q.Limit)
}

// listChunk bounds the index members a List reads at once.
const listChunk = 512

// getMany reads entries, and their JSON as stored ("" for none); a
// damaged entry reads as none, and is replaced by the next write.
func (r *Redis) getMany(ctx context.Context, client rueidis.Client, domains []string) ([]*Entry, []string, error) {
	cmds := make(rueidis.Commands, len(domains))
	for i, d := range domains {
		cmds[i] = client.B().Hget().Key(r.entries()).Field(d).Build()
	}
	entries, raw := make([]*Entry, len(domains)), make([]string, len(domains))
	for i, res := range client.DoMulti(ctx, cmds...) {
		s, err := res.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		raw[i] = s
		if e, err := decodeEntry(domains[i], s); err == nil {
			entries[i] = e
		}
	}
	return entries, raw, nil
}

func domainsOf(batch []Sighting) []string {
	out := make([]string, len(batch))
	for i, s := range batch {
		out[i] = s.Domain
	}
	return out
}

// Domains calls fn for every domain seen since the given time.
func (r *Redis) Domains(ctx context.Context, since time.Time, fn func(domain string) error) error {
	client, err := r.client()
	if err != nil {
		return err
	}
	const chunk = 1000
	for offset := int64(0); ; offset += chunk {
		c, cancel := context.WithTimeout(ctx, r.timeout)
		members, err := client.Do(c, client.B().Zrange().Key(r.prefix+"seen").Min("+inf").Max(ms(since)).Byscore().Rev().
			Limit(offset, chunk).Build()).AsStrSlice()
		cancel()
		if err != nil {
			return err
		}
		for _, d := range members {
			if err := fn(d); err != nil {
				return err
			}
		}
		if len(members) < chunk {
			return nil
		}
	}
}

// Counts returns the number of domains by verdict.
func (r *Redis) Counts(ctx context.Context) (map[string]int, error) {
	client, err := r.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	verdicts := []string{"flag", "hold", "defer", "reject"} // the rest of seen pass, or have no verdict yet
	cmds := make(rueidis.Commands, 0, len(verdicts)+1)
	for _, v := range verdicts {
		cmds = append(cmds, client.B().Zcard().Key(r.prefix+"v:"+v).Build())
	}
	cmds = append(cmds, client.B().Zcard().Key(r.prefix+"seen").Build())
	out := map[string]int{}
	known := 0
	for i, res := range client.DoMulti(ctx, cmds...) {
		n, err := res.AsInt64()
		if err != nil {
			return nil, err
		}
		if i < len(verdicts) {
			out[verdicts[i]] = int(n)
			known += int(n)
		} else if n > int64(known) {
			out["pass"] = int(n) - known // domains not decided yet count as passing here
		}
	}
	return out, nil
}

// CheckCounts returns the number of domains with a non-pass finding of
// each check: the sizes of their filter sets.
func (r *Redis) CheckCounts(ctx context.Context, checks []string) (map[string]int, error) {
	client, err := r.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(checks))
	for i, c := range checks {
		cmds[i] = client.B().Zcard().Key(r.prefix + "c:" + c).Build()
	}
	out := make(map[string]int, len(checks))
	for i, res := range client.DoMulti(ctx, cmds...) {
		n, err := res.AsInt64()
		if err != nil {
			return nil, err
		}
		out[checks[i]] = int(n)
	}
	return out, nil
}

// Close does nothing: the client is the fleet cache's.
func (r *Redis) Close() error { return nil }

func ms(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func checkIDs(e *Entry) string {
	ids := make([]string, 0, len(e.Findings))
	for _, f := range e.Findings {
		ids = append(ids, f.ID)
	}
	return strings.Join(ids, " ")
}

func decodeEntry(domain, s string) (*Entry, error) {
	if len(s) > maxEntryJSON {
		return nil, fmt.Errorf("an entry of %d octets", len(s))
	}
	var e Entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return nil, err
	}
	e.Domain = domain // the field it is stored under
	return &e, nil
}
