package sharedcache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/internal/testkit"
)

// On a three-node cluster, writes batched across slots land, another node
// reads them, and probe locks (a Lua release) work on any slot.
func TestClusterFleet(t *testing.T) {
	cluster := redislab.StartCluster(t)
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
		nodes[0].Set(fmt.Sprintf("mxguard:v1:k%d", i), []byte(fmt.Sprint(i)), time.Minute)
	}
	for i := range 50 {
		testkit.WaitFor(t, "a write on another node", func() bool {
			v, ok := nodes[1].Get(ctx, fmt.Sprintf("mxguard:v1:k%d", i), 64)
			return ok && string(v) == fmt.Sprint(i)
		})
	}
	for i := range 10 {
		key := fmt.Sprintf("mxguard:v1:lock:%d", i)
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

// The master killed under load: no lookup waits much past the shared
// timeout while the Sentinels fail over, and then the node uses the new
// master (up again, its writes readable).
func TestSentinelFailoverUnderLoad(t *testing.T) {
	set := redislab.StartSentinelSet(t)
	shared, err := sharedcache.New(set.URL, timeout, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	testkit.WaitFor(t, "the master through the Sentinels", shared.Up)
	ctx := context.Background()
	stop, done := make(chan struct{}), make(chan time.Duration)
	go func() {
		longest := time.Duration(0)
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- longest
				return
			default:
			}
			began := time.Now()
			shared.Get(ctx, fmt.Sprintf("mxguard:v1:load%d", i%100), 64)
			longest = max(longest, time.Since(began))
			shared.Set(fmt.Sprintf("mxguard:v1:load%d", i%100), []byte("v"), time.Minute)
		}
	}()
	set.Master.Kill()
	set.WaitMaster(t, set.Replica.Addr)
	testkit.WaitFor(t, "the fleet cache up on the new master", func() bool {
		shared.Set("mxguard:v1:after", []byte("failover"), time.Minute)
		v, ok := shared.Get(ctx, "mxguard:v1:after", 64)
		return ok && string(v) == "failover" && shared.Up()
	})
	close(stop)
	// A call stuck on the dead master would wait for the failover: seconds.
	if longest := <-done; longest > timeout+500*time.Millisecond {
		t.Errorf("a lookup waited %v during the failover (timeout %v)", longest, timeout)
	}
}
