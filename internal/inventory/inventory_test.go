package inventory

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

func seen(domain, verdict string, at time.Duration, findings ...string) Sighting {
	s := Sighting{Domain: domain, At: t0.Add(at), Messages: 1, Verdict: verdict}
	for _, id := range findings {
		s.Findings = append(s.Findings, Finding{ID: id, Status: "fail", Detail: id + " failed"})
	}
	return s
}

func TestApply(t *testing.T) {
	e, ch := apply(nil, seen("a.test", "pass", 0))
	if ch == nil || ch.From != "" || ch.To != "pass" || e.Messages != 1 || !e.FirstSeen.Equal(t0) || !e.FailingSince.IsZero() {
		t.Fatalf("first sighting: %+v %+v", e, ch)
	}
	if e, ch = apply(e, seen("a.test", "pass", time.Minute)); ch != nil || e.Messages != 2 || !e.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("same verdict: %+v %+v", e, ch)
	}
	e, ch = apply(e, seen("a.test", "defer", 2*time.Minute, "mx.port25"))
	if ch == nil || ch.From != "pass" || ch.To != "defer" || !e.FailingSince.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("newly failing: %+v %+v", e, ch)
	}
	e, _ = apply(e, seen("a.test", "flag", 3*time.Minute, "dmarc.record"))
	if !e.FailingSince.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("failing another way keeps its since: %v", e.FailingSince)
	}
	if e, ch = apply(e, seen("a.test", "pass", 90*time.Second)); ch != nil || e.Verdict != "flag" {
		t.Errorf("a sighting older than the last change changed it: %+v", e)
	}
	if e, ch = apply(e, Sighting{Domain: "a.test", At: t0.Add(4 * time.Minute), Messages: 1}); ch != nil || e.Verdict != "flag" || e.Messages != 6 {
		t.Errorf("a decision that failed open changed the verdict: %+v", e)
	}
	e, ch = apply(e, seen("a.test", "pass", 5*time.Minute))
	if ch == nil || !e.FailingSince.IsZero() || len(e.Findings) != 0 || len(e.Changes) != 4 || e.Changes[0].To != "pass" {
		t.Errorf("fixed: %+v", e)
	}
	for i := range 20 {
		e, _ = apply(e, seen("a.test", []string{"flag", "pass"}[i%2], time.Hour+time.Duration(i)*time.Minute))
	}
	if len(e.Changes) != changesKept {
		t.Errorf("%d changes kept, want %d", len(e.Changes), changesKept)
	}
}

func TestAuditChange(t *testing.T) {
	audited := func(v string) *Entry { return &Entry{AuditedAt: t0, AuditVerdict: v} }
	for _, c := range []struct {
		before *Entry
		now    string
		want   string
	}{
		{nil, "pass", "new"},
		{&Entry{Verdict: "defer"}, "defer", "new"},
		{audited("pass"), "defer", "newly-failing"},
		{audited("flag"), "pass", "fixed"},
		{audited("defer"), "flag", "still-failing"},
		{audited("pass"), "pass", "unchanged"},
	} {
		if got := AuditChange(c.before, c.now); got != c.want {
			t.Errorf("%+v then %s: %s, want %s", c.before, c.now, got, c.want)
		}
	}
}

func TestFromReport(t *testing.T) {
	if _, ok := FromReport(&policy.Report{Null: true}, t0); ok {
		t.Error("the null sender is inventoried")
	}
	s, ok := FromReport(&policy.Report{Domain: "x.test", Incomplete: true}, t0)
	if !ok || s.Verdict != "" || s.Messages != 1 {
		t.Errorf("a decision that failed open: %+v", s)
	}
}

// stores runs a test against every store: Local, and Redis on a real
// redis-server, a cluster and behind Sentinels. The last two, on servers
// the package's tests share, run side by side.
func stores(t *testing.T, maxDomains int, test func(t *testing.T, st Store)) {
	t.Run("local", func(t *testing.T) {
		l, err := OpenLocal("", maxDomains, 1<<30, false, discard)
		if err != nil {
			t.Fatal(err)
		}
		test(t, l)
	})
	t.Run("redis", func(t *testing.T) {
		test(t, NewRedis(connected(redisClient(t)), "mxguard:test:", maxDomains, 5*time.Second))
	})
	// The {inv} hash tag keeps every key, and the scripts, on one node.
	t.Run("redis-cluster", func(t *testing.T) {
		t.Parallel()
		test(t, NewRedis(connected(redislab.SharedCluster(t).Client(t)), redislab.Prefix(), maxDomains, 5*time.Second))
	})
	t.Run("redis-sentinel", func(t *testing.T) {
		t.Parallel()
		test(t, NewRedis(connected(redislab.SharedSentinelSet(t).Client(t)), redislab.Prefix(), maxDomains, 5*time.Second))
	})
}

// The tests share one Sentinel set and one cluster (redislab.Main).
func TestMain(m *testing.M) { os.Exit(redislab.Main(m)) }

func connected(c rueidis.Client) func() rueidis.Client { return func() rueidis.Client { return c } }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func redisClient(t *testing.T) rueidis.Client {
	t.Helper()
	return redislab.Client(t, rueidis.ClientOption{InitAddress: []string{redislab.Start(t).Addr}})
}

func TestStoreListsAndFilters(t *testing.T) {
	stores(t, 10000, func(t *testing.T, st Store) {
		ctx := context.Background()
		var batch []Sighting
		for i := range 2500 {
			v, f := "pass", []string(nil)
			if i%5 == 0 {
				v, f = "defer", []string{"mx.port25"}
			}
			// Many share a change time: pages must not lose or repeat ties.
			batch = append(batch, seen(fmt.Sprintf("d%04d.test", i), v, time.Duration(i/100)*time.Second, f...))
		}
		if _, err := st.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			query Query
			want  int
		}{{Query{Limit: 7}, 2500}, {Query{Verdict: "defer", Limit: 33}, 500}, {Query{Check: "mx.port25", Limit: 100}, 500}, {Query{Verdict: "pass"}, 2000}} {
			seenDomains := map[string]bool{}
			var last *Entry
			for pages := 0; ; pages++ {
				page, next, err := st.List(ctx, q.query)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page {
					if seenDomains[e.Domain] {
						t.Fatalf("%+v: %s listed twice", q.query, e.Domain)
					}
					seenDomains[e.Domain] = true
					if last != nil && !listOrder(last, e) {
						t.Fatalf("%+v: %s after %s", q.query, e.Domain, last.Domain)
					}
					last = e
				}
				if next == "" {
					break
				}
				q.query.Cursor = next
			}
			if len(seenDomains) != q.want {
				t.Errorf("%+v: %d domains, want %d", q.query, len(seenDomains), q.want)
			}
		}
		counts, err := st.Counts(ctx)
		if err != nil || counts["pass"] != 2000 || counts["defer"] != 500 {
			t.Errorf("counts %v %v", counts, err)
		}
		byCheck, err := st.CheckCounts(ctx, []string{"mx.port25", "spf.relay"})
		if err != nil || len(byCheck) != 2 || byCheck["mx.port25"] != 500 || byCheck["spf.relay"] != 0 {
			t.Errorf("counts by check %v %v", byCheck, err)
		}
		var since []string
		st.Domains(ctx, t0.Add(24*time.Second), func(d string) error { since = append(since, d); return nil })
		if len(since) != 100 {
			t.Errorf("%d domains seen in the last second, want 100", len(since))
		}
		if e, err := st.Get(ctx, "nosuch.test"); e != nil || err != nil {
			t.Errorf("a domain never seen: %+v %v", e, err)
		}
		if _, _, err := st.List(ctx, Query{Cursor: "!!"}); err == nil {
			t.Error("a forged cursor is accepted")
		}
	})
}

// The least recently seen domains go first beyond the bound.
func TestStoreIsBounded(t *testing.T) {
	stores(t, 100, func(t *testing.T, st Store) {
		ctx := context.Background()
		for i := range 300 {
			if _, err := st.Apply(ctx, []Sighting{seen(fmt.Sprintf("d%03d.test", i), "flag", time.Duration(i)*time.Second, "dmarc.record")}); err != nil {
				t.Fatal(err)
			}
		}
		counts, _ := st.Counts(ctx)
		if counts["flag"] != 100 {
			t.Errorf("%v domains kept, want 100", counts)
		}
		if e, _ := st.Get(ctx, "d000.test"); e != nil {
			t.Error("the least recently seen domain was kept")
		}
		if e, _ := st.Get(ctx, "d299.test"); e == nil {
			t.Error("the most recently seen domain was dropped")
		}
		page, _, _ := st.List(ctx, Query{Check: "dmarc.record"})
		if len(page) != 100 {
			t.Errorf("the check index holds %d, want 100", len(page))
		}
	})
}

// Two nodes seeing the same change at once: it is reported once.
func TestFleetReportsAChangeOnce(t *testing.T) {
	c := redisClient(t)
	nodes := []*Redis{NewRedis(connected(c), "mxguard:test:", 1000, 5*time.Second), NewRedis(connected(c), "mxguard:test:", 1000, 5*time.Second)}
	ctx := context.Background()
	nodes[0].Apply(ctx, []Sighting{seen("shared.test", "pass", 0)})
	for round := range 20 {
		verdict := []string{"defer", "pass"}[round%2]
		var wg sync.WaitGroup
		var mu sync.Mutex
		notices := 0
		for _, n := range nodes {
			wg.Go(func() {
				got, err := n.Apply(ctx, []Sighting{seen("shared.test", verdict, time.Duration(round+1)*time.Minute)})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				notices += len(got)
				mu.Unlock()
			})
		}
		wg.Wait()
		if notices != 1 {
			t.Fatalf("round %d: %d notices of one change, want 1", round, notices)
		}
	}
	e, _ := nodes[1].Get(ctx, "shared.test")
	if e.Messages != 41 {
		t.Errorf("%d messages counted, want 41", e.Messages)
	}
}

// What the fleet's store holds is input like any other: a damaged entry is
// replaced, not believed or fatal.
func TestFleetEntryGarbage(t *testing.T) {
	c := redisClient(t)
	st := NewRedis(connected(c), "mxguard:test:", 1000, 5*time.Second)
	ctx := context.Background()
	c.Do(ctx, c.B().Hset().Key("mxguard:test:{inv}:d").FieldValue().FieldValue("bad.test", "{not json").Build())
	c.Do(ctx, c.B().Zadd().Key("mxguard:test:{inv}:order").ScoreMember().ScoreMember(1, "bad.test").Build())
	if _, _, err := st.List(ctx, Query{}); err != nil {
		t.Errorf("listing beside garbage: %v", err)
	}
	notices, err := st.Apply(ctx, []Sighting{seen("bad.test", "pass", 0)})
	if err != nil || len(notices) != 1 {
		t.Fatalf("%v %v", notices, err)
	}
	if e, err := st.Get(ctx, "bad.test"); err != nil || e.Verdict != "pass" {
		t.Errorf("%+v %v", e, err)
	}
}

func TestLocalKeepsAcrossRestartsAndSetsDamageAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory")
	l, err := OpenLocal(path, 1000, 1<<30, true, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l.Apply(ctx, []Sighting{seen("a.test", "defer", 0, "mx.port25"), seen("b.test", "pass", time.Second)})
	if _, err := OpenLocal(path, 1000, 1<<30, true, discard); err == nil {
		t.Error("a second owner took the file")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = OpenLocal(path, 1000, 1<<30, true, discard)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := l.Get(ctx, "a.test"); e == nil || e.Verdict != "defer" || !e.FailingSince.Equal(t0) {
		t.Errorf("after a restart: %+v", e)
	}
	l.Close()

	os.WriteFile(path, []byte(fileHeader+"\n{\"domain\":\"a.test\"}\n{garbage\n"), 0o640)
	log := &strings.Builder{}
	l, err = OpenLocal(path, 1000, 1<<30, true, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatalf("a damaged file is fatal: %v", err)
	}
	defer l.Close()
	if c, _ := l.Counts(ctx); len(c) != 0 {
		t.Errorf("a damaged file was half loaded: %v", c)
	}
	aside, _ := filepath.Glob(path + ".damaged-*")
	if len(aside) != 1 || !strings.Contains(log.String(), "damaged") {
		t.Errorf("set aside %v; log %s", aside, log)
	}
}

// mxguard audit beside a running serve writes the journal; serve applies it.
func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory")
	l, err := OpenLocal(path, 1000, 1<<30, true, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	l.Apply(ctx, []Sighting{seen("a.test", "pass", 0)})
	audit := Sighting{Domain: "a.test", At: t0.Add(time.Hour), Verdict: "defer", Audit: true}
	if err := AppendJournal(path, []Sighting{audit}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(journalPath(path), append(must(os.ReadFile(journalPath(path))), "garbage\n"...), 0o640)
	notices, bad, err := l.TakeJournal(ctx)
	if err != nil || bad != 1 || len(notices) != 1 {
		t.Fatalf("%v %d %v", notices, bad, err)
	}
	if e, _ := l.Get(ctx, "a.test"); e.AuditVerdict != "defer" || e.Messages != 1 {
		t.Errorf("%+v", e)
	}
	if _, err := os.Stat(journalPath(path)); err == nil {
		t.Error("the journal was not removed")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// blockedStore never answers.
type blockedStore struct{ Store }

func (blockedStore) Apply(ctx context.Context, _ []Sighting) ([]Notice, error) {
	select {}
}
func (blockedStore) Counts(context.Context) (map[string]int, error) { return nil, nil }
func (blockedStore) CheckCounts(context.Context, []string) (map[string]int, error) {
	return nil, nil
}

// The mail path never waits: with a store that hangs, recording is still
// immediate and what does not fit is counted.
func TestRecordNeverBlocks(t *testing.T) {
	inv := New(blockedStore{}, Options{Queue: 100, FlushEvery: time.Millisecond, Log: discard})
	r := &policy.Report{Domain: "a.test"}
	for range 100000 {
		inv.Record(r)
	}
	if inv.Dropped() == 0 {
		t.Error("nothing dropped with the store hung and the queue full")
	}
}

// The fleet's inventory across a Sentinel failover (SENTINEL FAILOVER):
// what was written before is on the new master, replicated, and is read
// and listed from there; what is written after lands on it.
func TestSentinelInventoryFailover(t *testing.T) {
	set := redislab.SharedSentinelSet(t)
	prefix := redislab.Prefix()
	st := fleetStore(t, set.URL, prefix)
	ctx := context.Background()
	var batch []Sighting
	for i := range 300 {
		v, f := "pass", []string(nil)
		if i%5 == 0 {
			v, f = "defer", []string{"mx.port25"}
		}
		batch = append(batch, seen(fmt.Sprintf("d%03d.test", i), v, time.Duration(i)*time.Second, f...))
	}
	if _, err := st.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	entries := prefix + "{inv}:d"
	promoted := set.Replica.Addr
	replica := redislab.Direct(t, promoted)
	testkit.WaitFor(t, "the entries to reach the replica", func() bool { return hlen(replica, entries) == 300 })
	set.Failover(t)
	set.WaitMaster(t, promoted)
	// The old master takes writes until the Sentinels demote it, and a
	// node follows the Sentinels' announcement: write until one lands.
	tries := 0
	testkit.WaitFor(t, "a write on the new master", func() bool {
		tries++
		st.Apply(ctx, []Sighting{seen("after.test", "defer", time.Hour+time.Duration(tries)*time.Second, "spf.relay")})
		n, err := replica.Do(ctx, replica.B().Hexists().Key(entries).Field("after.test").Build()).AsInt64()
		return err == nil && n == 1
	})
	if n := hlen(replica, entries); n != 301 {
		t.Errorf("the new master holds %d entries, want 301", n)
	}
	listed := map[string]string{}
	for q := (Query{Limit: 40}); ; {
		page, next, err := st.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			listed[e.Domain] = e.Verdict
		}
		if next == "" {
			break
		}
		q.Cursor = next
	}
	for _, s := range batch {
		if listed[s.Domain] != s.Verdict {
			t.Errorf("%s listed as %q after the failover, want %q", s.Domain, listed[s.Domain], s.Verdict)
		}
	}
	if len(listed) != 301 || listed["after.test"] != "defer" {
		t.Errorf("%d domains listed, after.test %q", len(listed), listed["after.test"])
	}
	if counts, err := st.CheckCounts(ctx, []string{"mx.port25", "spf.relay"}); err != nil || counts["mx.port25"] != 60 || counts["spf.relay"] != 1 {
		t.Errorf("counts by check %v %v", counts, err)
	}
}

// fleetStore is the inventory of a node of the fleet whose cache.shared.url
// is url: on the fleet cache's client, connected.
func fleetStore(t *testing.T, url, prefix string) *Redis {
	shared, err := sharedcache.New(url, 5*time.Second, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shared.Close)
	testkit.WaitFor(t, "the fleet cache to connect", shared.Up)
	return NewRedis(shared.Client, prefix, 10000, 5*time.Second)
}

func hlen(c rueidis.Client, key string) int64 {
	n, _ := c.Do(context.Background(), c.B().Hlen().Key(key).Build()).AsInt64()
	return n
}

// The inventory's slot moved to another node of the cluster between two
// pages (resharding): the listing goes on from its cursor, none lost or
// repeated, and writes land on the slot's new node.
func TestClusterInventorySlotMoves(t *testing.T) {
	cluster := redislab.SharedCluster(t)
	prefix := redislab.Prefix()
	st := fleetStore(t, cluster.URL, prefix)
	ctx := context.Background()
	var batch []Sighting
	for i := range 300 {
		batch = append(batch, seen(fmt.Sprintf("d%03d.test", i), "flag", time.Duration(i)*time.Second, "dmarc.record"))
	}
	if _, err := st.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	var owner rueidis.Client
	q := Query{Check: "dmarc.record", Limit: 50}
	for pages := 0; ; pages++ {
		if pages == 2 {
			owner = redislab.Direct(t, cluster.MoveSlot(t, prefix+"{inv}:d").Addr)
			if n := hlen(owner, prefix+"{inv}:d"); n != 300 {
				t.Fatalf("the slot's new node holds %d entries, want 300", n)
			}
		}
		page, next, err := st.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if listed[e.Domain] {
				t.Fatalf("%s listed twice", e.Domain)
			}
			listed[e.Domain] = true
		}
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if len(listed) != 300 {
		t.Errorf("%d domains listed, want 300", len(listed))
	}
	if _, err := st.Apply(ctx, []Sighting{seen("after.test", "defer", time.Hour, "mx.port25")}); err != nil {
		t.Fatal(err)
	}
	if e, err := st.Get(ctx, "after.test"); err != nil || e == nil || e.Verdict != "defer" {
		t.Errorf("written after the move: %+v %v", e, err)
	}
	if n := hlen(owner, prefix+"{inv}:d"); n != 301 {
		t.Errorf("the slot's new node holds %d entries after a write, want 301", n)
	}
}
