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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// A package's tests share one SentinelSet and one Cluster: starting them is
// most of what such a test costs. The first test that asks starts them,
// Main stops them; a test has one at a time to itself, and keeps its keys
// apart under Prefix.
var lab struct {
	mu      sync.Mutex
	main    bool
	dir     string
	set     *SentinelSet
	cluster *Cluster
	err     map[string]error // why a rig could not start, for every test after
	stops   []func()
	setMu   sync.Mutex // held by the test using the set
	cluMu   sync.Mutex // held by the test using the cluster
}

// Main runs the tests of a package that uses SharedSentinelSet or
// SharedCluster, and then stops them: call it from TestMain.
func Main(m *testing.M) int {
	lab.mu.Lock()
	lab.main = true
	lab.mu.Unlock()
	code := m.Run()
	lab.mu.Lock()
	defer lab.mu.Unlock()
	for _, stop := range lab.stops {
		stop()
	}
	if lab.dir != "" {
		os.RemoveAll(lab.dir)
	}
	return code
}

// shared starts the rig called name once, with start, in a directory
// that Main removes.
func shared(t testing.TB, name string, start func(dir string) (stop func(), err error)) {
	t.Helper()
	Require(t)
	lab.mu.Lock()
	defer lab.mu.Unlock()
	if !lab.main {
		t.Fatal("redislab: the package's TestMain must call redislab.Main to share servers")
	}
	if err := lab.err[name]; err != nil {
		t.Fatalf("the shared %s did not start: %v", name, err)
	}
	if lab.dir == "" {
		dir, err := os.MkdirTemp("", "redislab-")
		if err != nil {
			t.Fatal(err)
		}
		lab.dir, lab.err = dir, map[string]error{}
	}
	dir := filepath.Join(lab.dir, name)
	if _, err := os.Stat(dir); err == nil {
		return // started
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stop, err := start(dir)
	lab.stops = append(lab.stops, stop)
	if err != nil {
		lab.err[name] = err
		t.Fatalf("the shared %s did not start: %v", name, err)
	}
}

var prefixes atomic.Int64

// Prefix is a key prefix of the test's own on the shared servers, where
// other tests, and earlier runs of this one (go test -count), keep theirs.
func Prefix() string {
	return fmt.Sprintf("mxguard:lab%d:", prefixes.Add(1))
}

// MasterName is the name the Sentinels of a SentinelSet know the master by.
const MasterName = "mxguard"

// SentinelSet is a master, its replica and three Sentinels watching them
// (redis-server --sentinel), as a fleet that must survive its master runs.
type SentinelSet struct {
	Master, Replica *Server // as of SharedSentinelSet and WaitMaster
	Sentinels       []*Server
	URL             string // redis-sentinel://s1,s2,s3/0?master_name=mxguard
}

// SharedSentinelSet is the package's set, healthy: whatever failover an
// earlier test made, a master, a replica in sync with it (the killed one
// restarted) and three Sentinels that agree on both, so that it may fail
// over again. The test has it to itself until it ends.
func SharedSentinelSet(t testing.TB) *SentinelSet {
	t.Helper()
	shared(t, "sentinel", func(dir string) (func(), error) {
		set, err := startSentinelSet(dir)
		lab.set = set
		return set.stop, err
	})
	lab.setMu.Lock()
	t.Cleanup(lab.setMu.Unlock)
	if err := lab.set.heal(); err != nil {
		t.Fatal(err)
	}
	return lab.set
}

func startSentinelSet(dir string) (*SentinelSet, error) {
	set := &SentinelSet{}
	// A master sends a new replica its data at once, not after waiting 5 s
	// for others to sync with too.
	now := []string{"repl-diskless-sync-delay", "0"}
	var err error
	if set.Master, err = startServerIn(filepath.Join(dir, "a"), now...); err != nil {
		return set, err
	}
	if set.Replica, err = startServerIn(filepath.Join(dir, "b"), append(now, "replicaof", strings.Replace(set.Master.Addr, ":", " ", 1))...); err != nil {
		return set, err
	}
	var addrs []string
	for i := range 3 {
		s, err := startSentinel(filepath.Join(dir, "s"+strconv.Itoa(i)), set.Master.Addr)
		if err != nil {
			return set, err
		}
		set.Sentinels = append(set.Sentinels, s)
		addrs = append(addrs, s.Addr)
	}
	set.URL = "redis-sentinel://" + strings.Join(addrs, ",") + "/0?master_name=" + MasterName
	return set, set.heal()
}

func startServerIn(dir string, directives ...string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return StartServer(dir, directives...)
}

func (set *SentinelSet) stop() {
	for _, s := range append([]*Server{set.Master, set.Replica}, set.Sentinels...) {
		if s != nil {
			s.Kill()
		}
	}
}

// startSentinel starts a Sentinel that watches the master at addr, quick
// to judge it down and to fail over again (a failover-timeout of 4 s: the
// next failover may start 8 s after one; a failover that takes longer, as
// on a loaded machine, is abandoned); its configuration is a file, which
// it rewrites.
func startSentinel(dir, master string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("sentinel monitor %s %s 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 4000\n",
		MasterName, strings.Replace(master, ":", " ", 1))
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return startServer(dir, port, []string{path, "--sentinel"}, nil)
}

// heal makes the set fit to fail over: the server the Sentinels name the
// master is Master, the other, restarted if it was killed, replicates it
// (as the Sentinels would make it, seconds later), and every Sentinel
// knows both and the other Sentinels. Each step looks again at who the
// master is: on a loaded machine the Sentinels may fail over meanwhile.
func (set *SentinelSet) heal() error {
	return waitFor("the Sentinel set to be fit to fail over", set.fit)
}

// fit takes the next step of heal, and reports whether none is left.
func (set *SentinelSet) fit() (bool, error) {
	var master string
	for _, s := range set.Sentinels {
		a, err := masterOf(s.Addr)
		if err != nil {
			return false, err
		}
		if master != "" && a != master {
			return false, fmt.Errorf("the Sentinels name %s and %s the master", master, a)
		}
		master = a
	}
	switch master {
	case set.Master.Addr:
	case set.Replica.Addr:
		set.Master, set.Replica = set.Replica, set.Master
	default:
		return false, fmt.Errorf("the Sentinels name %s the master, a server of no set", master)
	}
	if info, err := doString(master, "INFO", "replication"); err != nil || !strings.Contains(info, "role:master") {
		return false, fmt.Errorf("%s is not a master yet: %v", master, err)
	}
	if !set.Replica.running() {
		if err := set.Replica.start(); err != nil {
			return false, err
		}
	}
	info, err := doString(set.Replica.Addr, "INFO", "replication")
	if err != nil {
		return false, err
	}
	host, port, _ := net.SplitHostPort(master)
	if !strings.Contains(info, "master_host:"+host+"\r\nmaster_port:"+port+"\r\n") {
		_, err := do(set.Replica.Addr, "REPLICAOF", host, port)
		return false, err
	}
	if !strings.Contains(info, "master_link_status:up") || !strings.Contains(info, "master_sync_in_progress:0") {
		return false, fmt.Errorf("%s is not in sync with %s yet", set.Replica.Addr, master)
	}
	for _, s := range set.Sentinels {
		msg, err := do(s.Addr, "SENTINEL", "MASTER", MasterName)
		if err != nil {
			return false, err
		}
		m, _ := msg.AsStrMap()
		if m["num-other-sentinels"] != "2" || m["flags"] != "master" {
			return false, fmt.Errorf("%s: master flags %q, %s other Sentinels", s.Addr, m["flags"], m["num-other-sentinels"])
		}
		if msg, err = do(s.Addr, "SENTINEL", "REPLICAS", MasterName); err != nil {
			return false, err
		}
		replicas, _ := msg.ToArray()
		known := false
		var seen []string
		for _, r := range replicas {
			m, _ := r.AsStrMap()
			// Not down; what it says of its master the Sentinel learns by
			// INFO, every 10 s: not needed for a failover.
			known = known || net.JoinHostPort(m["ip"], m["port"]) == set.Replica.Addr && m["flags"] == "slave"
			seen = append(seen, m["ip"]+":"+m["port"]+" "+m["flags"])
		}
		if !known {
			return false, fmt.Errorf("%s knows replicas %q, not %s", s.Addr, seen, set.Replica.Addr)
		}
	}
	return true, nil
}

func masterOf(sentinel string) (string, error) {
	msg, err := do(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
	a, _ := msg.AsStrSlice()
	if err != nil || len(a) != 2 {
		return "", fmt.Errorf("%s names no master: %v", sentinel, err)
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// WaitMaster waits until every Sentinel names the server at addr as the
// master and that server says it is one; then it is Master.
func (set *SentinelSet) WaitMaster(t testing.TB, addr string) {
	t.Helper()
	for _, s := range set.Sentinels {
		waitUntil(t, s.Addr+" to name "+addr+" the master", func() (bool, error) {
			a, err := masterOf(s.Addr)
			return a == addr, err
		})
	}
	waitUntil(t, addr+" to be a master", func() (bool, error) {
		info, err := doString(addr, "INFO", "replication")
		return strings.Contains(info, "role:master"), err
	})
	if set.Replica.Addr == addr {
		set.Master, set.Replica = set.Replica, set.Master
	}
}

// Failover asks a Sentinel for a failover (SENTINEL FAILOVER: the master
// is alive, and becomes a replica), retrying while the Sentinels are not
// ready for one, and returns at once: the replica is promoted soon after.
func (set *SentinelSet) Failover(t testing.TB) {
	t.Helper()
	waitUntil(t, "a Sentinel to start a failover", func() (bool, error) {
		_, err := do(set.Sentinels[0].Addr, "SENTINEL", "FAILOVER", MasterName)
		return err == nil, err
	})
}

// Cluster is a Redis Cluster of three masters, no replicas.
type Cluster struct {
	Nodes []*Server
	URL   string // redis://n1,n2,n3/0
}

// SharedCluster is the package's cluster; the test has it to itself until
// it ends.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	shared(t, "cluster", func(dir string) (func(), error) {
		c, err := startCluster(dir)
		lab.cluster = c
		return c.stop, err
	})
	lab.cluMu.Lock()
	t.Cleanup(lab.cluMu.Unlock)
	return lab.cluster
}

// startCluster starts three nodes and joins them with redis-cli --cluster
// create; it returns once every node says the cluster is ok.
func startCluster(dir string) (*Cluster, error) {
	c := &Cluster{}
	var addrs []string
	for i := range 3 {
		bus, err := freePort() // port+10000, the default, may be out of range
		if err != nil {
			return c, err
		}
		n, err := startServerIn(filepath.Join(dir, strconv.Itoa(i)), "cluster-enabled", "yes", "cluster-config-file", "nodes.conf",
			"cluster-port", strconv.Itoa(bus), "cluster-node-timeout", "5000")
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	c.URL = "redis://" + strings.Join(addrs, ",") + "/0"
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")...).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		if err := waitFor(n.Addr+" to join the cluster", func() (bool, error) {
			info, err := doString(n.Addr, "CLUSTER", "INFO")
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3"), err
		}); err != nil {
			return c, err
		}
	}
	return c, nil
}

// MoveSlot moves the slot that key hashes to, and the keys in it, to the
// next node, as resharding does (CLUSTER SETSLOT IMPORTING and MIGRATING,
// MIGRATE, then SETSLOT NODE on every node), and returns that node.
func (c *Cluster) MoveSlot(t testing.TB, key string) *Server {
	t.Helper()
	msg, err := do(c.Nodes[0].Addr, "CLUSTER", "KEYSLOT", key)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := msg.AsInt64()
	slot := strconv.FormatInt(n, 10)
	ids := make([]string, len(c.Nodes))
	from := -1
	for i, node := range c.Nodes {
		if ids[i], err = doString(node.Addr, "CLUSTER", "MYID"); err != nil {
			t.Fatal(err)
		}
		if owns(t, node, n) {
			from = i
		}
	}
	if from < 0 {
		t.Fatalf("no node owns slot %s", slot)
	}
	src, dst := c.Nodes[from], c.Nodes[(from+1)%len(c.Nodes)]
	to := ids[(from+1)%len(c.Nodes)]
	host, port, _ := net.SplitHostPort(dst.Addr)
	for _, cmd := range [][]string{
		{dst.Addr, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from]},
		{src.Addr, "CLUSTER", "SETSLOT", slot, "MIGRATING", to},
	} {
		if _, err := do(cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	for {
		msg, err := do(src.Addr, "CLUSTER", "GETKEYSINSLOT", slot, "100")
		keys, _ := msg.AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		if _, err := do(src.Addr, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...); err != nil {
			t.Fatalf("MIGRATE: %v", err)
		}
	}
	order := []*Server{dst, src} // the owner first, then the others
	for _, node := range c.Nodes {
		if node != dst && node != src {
			order = append(order, node)
		}
	}
	for _, node := range order {
		if _, err := do(node.Addr, "CLUSTER", "SETSLOT", slot, "NODE", to); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// owns reports whether node serves slot, by its own line of CLUSTER
// NODES: "id addr flags(myself,...) master ping pong epoch link slots...".
func owns(t testing.TB, node *Server, slot int64) bool {
	t.Helper()
	nodes, err := doString(node.Addr, "CLUSTER", "NODES")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, errA := strconv.ParseInt(lo, 10, 64)
			b, errB := strconv.ParseInt(hi, 10, 64)
			if errA == nil && errB == nil && a <= slot && slot <= b {
				return true
			}
		}
	}
	return false
}

func (c *Cluster) stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
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

// waitFor polls cond for up to a minute; its error is returned if it
// never holds.
func waitFor(what string, cond func() (bool, error)) error {
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, err = cond(); ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up waiting for %s (last error: %v)", what, err)
		}
	}
}

func waitUntil(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	if err := waitFor(what, cond); err != nil {
		t.Fatal(err)
	}
}

// Client is a plain client of the set's master, through the Sentinels.
func (set *SentinelSet) Client(t testing.TB) rueidis.Client {
	return Client(t, rueidis.ClientOption{InitAddress: []string{set.Sentinels[0].Addr, set.Sentinels[1].Addr},
		Sentinel: rueidis.SentinelOption{MasterSet: MasterName}})
}

// Client is a plain client of the cluster.
func (c *Cluster) Client(t testing.TB) rueidis.Client {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr)
	}
	return Client(t, rueidis.ClientOption{InitAddress: addrs})
}

// Direct is a plain client of the server at addr alone, whatever its role.
func Direct(t testing.TB, addr string) rueidis.Client {
	return Client(t, rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true})
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
