package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// runFleet compares a fleet of mxguards sharing one Redis with a fleet
// that does not: the same domains decided by every node in turn. The nodes
// are engines in this process, each with its own local caches and its own
// Redis client, as separate processes would have.
func runFleet(fs *flag.FlagSet, args []string) ([]row, error) {
	nodes := fs.Int("nodes", 3, "mxguards in the fleet")
	domains := fs.Int("domains", 1000, "distinct sender domains")
	mxAddrs := fs.Int("mx", 50, "distinct MX addresses the domains use")
	concurrency := fs.Int("concurrency", 64, "decisions at once on a node")
	parse(fs, args, "domains=60", "mx=6", "concurrency=8")
	var fleetNames []string
	var notPassed atomic.Int64 // decisions, cold or warm, that did not pass
	if err := redislab.Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mxbench-redis-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := redislab.StartServer(dir)
	if err != nil {
		return nil, err
	}
	defer srv.Kill()

	var rows []row
	type built struct {
		label string
		fleet []*policy.Engine
		close func()
	}
	var fleets []built
	defer func() {
		for _, f := range fleets {
			f.close()
		}
	}()
	for _, shared := range []bool{false, true} {
		sb, err := smtptest.NewSandbox()
		if err != nil {
			return nil, err
		}
		var mxServers []*smtptest.SMTPServer
		for i := 0; i < *mxAddrs; i++ {
			s, err := sb.Serve(fmt.Sprintf("127.0.31.%d", i+1), smtptest.Accept)
			if err != nil {
				return nil, err
			}
			mxServers = append(mxServers, s)
		}
		names := make([]string, *domains)
		for i := range names {
			names[i] = fmt.Sprintf("d%04d.fleet.test", i)
			host := fmt.Sprintf("mx%02d.fleet.test", i%*mxAddrs)
			sb.Zone.MX(names[i], 10, host).A(host, fmt.Sprintf("127.0.31.%d", i%*mxAddrs+1))
			spectest.Passing(sb.Zone, names[i])
		}
		fleet := make([]*policy.Engine, *nodes)
		prefix := fmt.Sprintf("mxbench:%d:", time.Now().UnixNano()) // the fleet's, fresh each run
		var caches []*sharedcache.Redis
		for n := range fleet {
			cfg := policy.DefaultConfig()
			cfg.Resolver.Servers = []string{sb.DNS.Addr}
			cfg.Probe.Port = sb.Port
			cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			cfg.SharedPrefix = prefix
			cfg.OutboundIPs = []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(spectest.IPOutDual), 32)}
			if shared {
				c, err := sharedcache.New(srv.URL, 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					return nil, err
				}
				for deadline := time.Now().Add(10 * time.Second); !c.Up() && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				}
				caches = append(caches, c)
				cfg.Shared = c
			}
			if fleet[n], err = policy.New(cfg); err != nil {
				return nil, err
			}
		}
		label := "local only"
		if shared {
			label = "shared Redis"
		}
		// Cold: each node in turn decides every domain. Between nodes the
		// shared writes are let land, as traffic spreads over minutes.
		cold := make([][]time.Duration, *nodes)
		for n, e := range fleet {
			cold[n] = decideAll(e, names, *concurrency, &notPassed)
			time.Sleep(200 * time.Millisecond)
		}
		probes := 0
		for _, s := range mxServers {
			probes += s.Connections()
		}
		queries := sb.DNS.Queries()
		keys := uniqueQueries(*domains, *mxAddrs)
		qMetric := fmt.Sprintf("%s: DNS queries per (name, type), fleet-wide (%d nodes, %d domains)", label, *nodes, *domains)
		pMetric := fmt.Sprintf("%s: probes per MX address, fleet-wide", label)
		qValue, pValue := fmt.Sprintf("%.2f", float64(queries)/float64(keys)), fmt.Sprintf("%.2f", float64(probes)/float64(*mxAddrs))
		if shared { // the fleet asks each once
			rows = append(rows, sanity("fleet", qMetric, qValue, "1", queries == keys), sanity("fleet", pMetric, pValue, "1", probes == *mxAddrs))
		} else {
			rows = append(rows, row{"fleet", qMetric, qValue, "", false}, row{"fleet", pMetric, pValue, "", false})
		}
		for n := range fleet {
			rows = append(rows, row{"fleet", fmt.Sprintf("%s: cold decision p50 / p99, node %d", label, n+1),
				ms(percentile(cold[n], 50)) + " / " + ms(percentile(cold[n], 99)), "", false})
		}
		fleets = append(fleets, built{label, fleet, func() {
			for _, c := range caches {
				c.Close()
			}
			sb.Close()
		}})
		fleetNames = names
	}
	// Warm: every node decides every domain again, from its local cache;
	// the two fleets alternate, three rounds each, as the machine is noisy.
	warm := make([][]float64, len(fleets))
	sharedLookups := func() (n uint64) {
		for _, e := range fleets[1].fleet {
			st := e.SharedStats()
			n += st.DNS.Hits + st.DNS.Misses + st.Probe.Hits + st.Probe.Misses
		}
		return n
	}
	before := sharedLookups()
	for round := 0; round < 4; round++ {
		for k := range fleets {
			i := (k + round) % len(fleets) // each fleet goes first in turn
			f := fleets[i]
			var ds []time.Duration
			for _, e := range f.fleet {
				ds = append(ds, decideAll(e, fleetNames, *concurrency, &notPassed)...)
			}
			warm[i] = append(warm[i], float64(percentile(ds, 50)))
		}
	}
	for i, f := range fleets {
		rows = append(rows, row{"fleet", f.label + ": warm decision p50 (median of 4 alternating rounds)", ms(time.Duration(median(warm[i]))), "", false})
	}
	during := sharedLookups() - before
	rows = append(rows, sanity("fleet", "shared cache lookups during the warm rounds", fmt.Sprint(during), "0", during == 0),
		sanity("fleet", "decisions that did not pass", fmt.Sprint(notPassed.Load()), "0", notPassed.Load() == 0))
	ratio := median(warm[1]) / median(warm[0])
	rows = append(rows, row{"fleet", "warm decision, shared / local only", fmt.Sprintf("%.1f%%", 100*ratio), "<= 105% " + verdict(ratio <= 1.05), false})
	return rows, nil
}

// decideAll decides every domain on e, concurrency at once, and returns
// the decision times, sorted; it counts the decisions that do not pass.
func decideAll(e *policy.Engine, names []string, concurrency int, notPassed *atomic.Int64) []time.Duration {
	times := make([]time.Duration, len(names))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				began := time.Now()
				if e.Evaluate(context.Background(), policy.Request{Domain: names[i]}).Verdict() != policy.Pass {
					notPassed.Add(1)
				}
				times[i] = time.Since(began)
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	return times
}

// uniqueQueries is how many distinct (name, type) the workload asks: each
// domain's MX, its SPF TXT and its _dmarc TXT, and each MX host's A and
// AAAA. (Each domain has its own DMARC record: the organizational
// domain's is never asked.)
func uniqueQueries(domains, mxHosts int) int { return 3*domains + 2*mxHosts }
