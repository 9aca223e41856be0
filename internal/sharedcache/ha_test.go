package sharedcache_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
)

// The tests share one Sentinel set and one cluster (redislab.Main).
func TestMain(m *testing.M) { os.Exit(redislab.Main(m)) }

// On a three-node cluster, writes batched across slots land, another node
// reads them, also once their slot moved to another node (resharding),
// and probe locks (a Lua release) work on any slot.
func TestClusterFleet(t *testing.T) {
	cluster := redislab.SharedCluster(t)
	prefix := redislab.Prefix()
	var nodes []*sharedcache.Redis
	for range 2 {
		n, err := sharedcache.New(cluster.URL, patient, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		testkit.WaitFor(t, "the cluster to connect", n.Up)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	for i := range 50 {
		nodes[0].Set(fmt.Sprintf("%sk%d", prefix, i), []byte(fmt.Sprint(i)), time.Minute)
	}
	for i := range 50 {
		testkit.WaitFor(t, "a write on another node", func() bool {
			v, ok := nodes[1].Get(ctx, fmt.Sprintf("%sk%d", prefix, i), 64)
			return ok && string(v) == fmt.Sprint(i)
		})
	}
	moved := prefix + "k7"
	cluster.MoveSlot(t, moved)
	if v, ok := nodes[1].Get(ctx, moved, 64); !ok || string(v) != "7" {
		t.Errorf("%s after its slot moved: %q %v", moved, v, ok)
	}
	nodes[0].Set(moved, []byte("moved"), time.Minute)
	testkit.WaitFor(t, "a write after the slot moved", func() bool {
		v, ok := nodes[1].Get(ctx, moved, 64)
		return ok && string(v) == "moved"
	})
	for i := range 10 {
		key := fmt.Sprintf("%slock:%d", prefix, i)
		unlock, mine := nodes[0].Lock(ctx, key, time.Minute)
		if _, other := nodes[1].Lock(ctx, key, time.Minute); !mine || other {
			t.Fatalf("%s: first %v, second %v", key, mine, other)
		}
		unlock()
		if unlock2, again := nodes[1].Lock(ctx, key, time.Minute); !again {
			t.Fatalf("%s still held after its release", key)
		} else {
			unlock2()
		}
	}
}

// cache.shared.key on a cluster: values signed on one node read on
// another whatever slot they hash to, forged ones refused.
func TestClusterForgedValuesAreRefused(t *testing.T) {
	cluster := redislab.SharedCluster(t)
	forgedValues(t, cluster.URL, cluster.Client(t), redislab.Prefix())
}

// cache.shared.key through the Sentinels.
func TestSentinelForgedValuesAreRefused(t *testing.T) {
	set := redislab.SharedSentinelSet(t)
	forgedValues(t, set.URL, set.Client(t), redislab.Prefix())
}

// load is a node's lookups and writes, a thousand a second (a loop as
// fast as they come back would spin while the breaker is open, and starve
// the very calls it times), until stop; it tells how many it made and the
// longest a lookup took.
type load struct {
	lookups atomic.Int64
	stop    chan struct{}
	longest chan time.Duration
}

func startLoad(shared *sharedcache.Redis, prefix string) *load {
	l := &load{stop: make(chan struct{}), longest: make(chan time.Duration)}
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		longest := time.Duration(0)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				l.longest <- longest
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("%sload%d", prefix, i%100)
			began := time.Now()
			shared.Get(context.Background(), key, 64)
			longest = max(longest, time.Since(began))
			l.lookups.Add(1)
			shared.Set(key, []byte("v"), time.Minute)
		}
	}()
	return l
}

// end stops the load and checks its lookups: a call stuck on the old
// master would wait for the failover, seconds; one within the timeout
// takes it at most, and the margin is for a loaded machine.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	if longest := <-l.longest; longest > timeout+500*time.Millisecond {
		t.Errorf("a lookup waited %v during the failover (timeout %v)", longest, timeout)
	}
}

// upOn waits until the node's writes land on the server at addr, that it
// reads them back, and that it says it is up.
func upOn(t *testing.T, shared *sharedcache.Redis, addr, key string) {
	t.Helper()
	server := redislab.Direct(t, addr)
	testkit.WaitFor(t, "the fleet cache up on "+addr, func() bool {
		shared.Set(key, []byte("failover"), time.Minute)
		v, ok := shared.Get(context.Background(), key, 64)
		return ok && string(v) == "failover" && shared.Up() && exists(t, server, key)
	})
}

// The master killed under load: no lookup waits much past the shared
// timeout while the Sentinels fail over; mxguard_shared_cache_up says 0
// meanwhile, and 1 once the node uses the new master.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	set := redislab.SharedSentinelSet(t)
	prefix := redislab.Prefix()
	e, shared := node(t, spectest.Sandbox(t), set.URL, timeout)
	m := metrics.New(func() *policy.Engine { return e })
	m.WatchSharedCache(shared, func() *policy.Engine { return e })
	if up := gauge(t, m, "mxguard_shared_cache_up"); up != 1 {
		t.Fatalf("mxguard_shared_cache_up %v before the failover", up)
	}
	l := startLoad(shared, prefix)
	promoted := set.Replica.Addr
	set.Master.Kill()
	// The breaker stays open for its cool-down, a second, and the
	// Sentinels take longer than that to judge the master down.
	testkit.WaitFor(t, "mxguard_shared_cache_up 0", func() bool { return gauge(t, m, "mxguard_shared_cache_up") == 0 })
	set.WaitMaster(t, promoted)
	upOn(t, shared, promoted, prefix+"after")
	l.end(t)
	if up := gauge(t, m, "mxguard_shared_cache_up"); up != 1 {
		t.Errorf("mxguard_shared_cache_up %v after the failover", up)
	}
}

// SENTINEL FAILOVER under load (the master alive, demoted): lookups go on
// throughout, none waits much past the timeout, values written before are
// read from the new master, and writes after land on it.
func TestSentinelGracefulFailoverUnderLoad(t *testing.T) {
	set := redislab.SharedSentinelSet(t)
	prefix := redislab.Prefix()
	shared, err := sharedcache.New(set.URL, timeout, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	testkit.WaitFor(t, "the master through the Sentinels", shared.Up)
	shared.Set(prefix+"before", []byte("kept"), time.Hour)
	replica := redislab.Direct(t, set.Replica.Addr)
	testkit.WaitFor(t, "the value to reach the replica", func() bool { return exists(t, replica, prefix+"before") })
	l := startLoad(shared, prefix)
	promoted := set.Replica.Addr
	during := l.lookups.Load()
	set.Failover(t)
	set.WaitMaster(t, promoted)
	if n := l.lookups.Load() - during; n == 0 {
		t.Error("no lookup was made during the failover")
	}
	upOn(t, shared, promoted, prefix+"after")
	l.end(t)
	if !exists(t, redislab.Direct(t, promoted), prefix+"before") {
		t.Error("the value written before the failover is not on the new master")
	}
	// One lookup may time out on a loaded machine, and open the breaker.
	testkit.WaitFor(t, "the node to read the value written before", func() bool {
		v, ok := shared.Get(context.Background(), prefix+"before", 64)
		return ok && string(v) == "kept"
	})
}

// gauge reads a gauge as a scrape does.
func gauge(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s among %d metric families", name, len(families))
	return 0
}
