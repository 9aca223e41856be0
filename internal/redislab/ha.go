package redislab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// MasterName is the name the Sentinels of a SentinelSet know the master by.
const MasterName = "mxguard"

// SentinelSet is a master, its replica and three Sentinels watching them
// (redis-server --sentinel), as a fleet that must survive its master runs.
type SentinelSet struct {
	Master, Replica *Server
	Sentinels       []*Server
	URL             string // redis-sentinel://s1,s2,s3/0?master_name=mxguard
}

// StartSentinelSet starts the set and returns once the Sentinels know the
// replica and each other, so that a failover can happen; all of it stops
// when the test ends. directives apply to the master and the replica.
func StartSentinelSet(t testing.TB, directives ...string) *SentinelSet {
	t.Helper()
	for i := 0; i+1 < len(directives); i += 2 {
		if directives[i] == "requirepass" { // either may be the master
			directives = append(directives, "masterauth", directives[i+1])
		}
	}
	set := &SentinelSet{Master: Start(t, directives...)}
	set.Replica = Start(t, append([]string{"replicaof", strings.Replace(set.Master.Addr, ":", " ", 1)}, directives...)...)
	var addrs []string
	for range 3 {
		s := startSentinel(t, set.Master.Addr, directives)
		set.Sentinels = append(set.Sentinels, s)
		addrs = append(addrs, s.Addr)
	}
	set.URL = "redis-sentinel://" + strings.Join(addrs, ",") + "/0?master_name=" + MasterName
	for _, s := range set.Sentinels {
		waitUntil(t, s.Addr+" to know the replica and the other Sentinels", func() (bool, error) {
			msg, err := do(s.Addr, "SENTINEL", "MASTER", MasterName)
			m, _ := msg.AsStrMap()
			return m["num-slaves"] == "1" && m["num-other-sentinels"] == "2", err
		})
	}
	waitUntil(t, "the replica to be in sync", func() (bool, error) {
		info, err := doString(set.Replica.Addr, "INFO", "replication")
		return strings.Contains(info, "master_link_status:up"), err
	})
	return set
}

// startSentinel starts a Sentinel that watches the master at addr, quick
// to judge it down; its configuration is a file, which it rewrites.
func startSentinel(t testing.TB, master string, directives []string) *Server {
	t.Helper()
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("sentinel monitor %s %s 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 10000\n",
		MasterName, strings.Replace(master, ":", " ", 1))
	for i := 0; i+1 < len(directives); i += 2 {
		if directives[i] == "requirepass" {
			conf += fmt.Sprintf("sentinel auth-pass %s %s\n", MasterName, directives[i+1])
		}
	}
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := startServer(dir, port, []string{path, "--sentinel"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// WaitMaster waits until every Sentinel names the server at addr as the
// master and that server says it is one.
func (set *SentinelSet) WaitMaster(t testing.TB, addr string) {
	t.Helper()
	for _, s := range set.Sentinels {
		waitUntil(t, s.Addr+" to name "+addr+" the master", func() (bool, error) {
			msg, err := do(s.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
			a, _ := msg.AsStrSlice()
			return len(a) == 2 && a[0]+":"+a[1] == addr, err
		})
	}
	waitUntil(t, addr+" to be a master", func() (bool, error) {
		info, err := doString(addr, "INFO", "replication")
		return strings.Contains(info, "role:master"), err
	})
}

// Cluster is a Redis Cluster of three masters, no replicas.
type Cluster struct {
	Nodes []*Server
	URL   string // redis://n1,n2,n3/0
}

// StartCluster starts three nodes and joins them with redis-cli --cluster
// create; it returns once every node says the cluster is ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{}
	var addrs []string
	for range 3 {
		bus, err := freePort() // port+10000, the default, may be out of range
		if err != nil {
			t.Fatal(err)
		}
		n := Start(t, "cluster-enabled", "yes", "cluster-config-file", "nodes.conf", "cluster-port", strconv.Itoa(bus),
			"cluster-node-timeout", "5000")
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	c.URL = "redis://" + strings.Join(addrs, ",") + "/0"
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		waitUntil(t, n.Addr+" to join the cluster", func() (bool, error) {
			info, err := doString(n.Addr, "CLUSTER", "INFO")
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3"), err
		})
	}
	return c
}

// do sends one command to the server at addr alone (no cluster or
// Sentinel discovery).
func do(addr string, args ...string) (rueidis.RedisMessage, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true,
		DisableCache: true, DisableRetry: true, Dialer: net.Dialer{Timeout: 5 * time.Second}})
	if err != nil {
		return rueidis.RedisMessage{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).ToMessage()
}

func doString(addr string, args ...string) (string, error) {
	msg, err := do(addr, args...)
	if err != nil {
		return "", err
	}
	return msg.ToString()
}

// waitUntil polls cond for up to a minute; its error is reported if it
// never holds.
func waitUntil(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, err = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s: %v", what, err)
		}
	}
}

// Client is a plain client (no client-side cache) for a test to look at
// and tamper with what the servers hold; it closes when the test ends.
func Client(t testing.TB, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
