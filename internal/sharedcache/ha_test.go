package sharedcache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
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
		waitFor(t, "the cluster to connect", n.Up)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	for i := range 50 {
		nodes[0].Set(fmt.Sprintf("mxguard:v1:k%d", i), []byte(fmt.Sprint(i)), time.Minute)
	}
	for i := range 50 {
		waitFor(t, "a write on another node", func() bool {
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
