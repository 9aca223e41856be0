package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// memAddr is the loopback address of MX host i of the memory benchmark:
// nothing listens there, so probes are refused at once and cached.
func memAddr(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", 100+i>>16, i>>8&255, i&255)
}

// runZoneServer is the child process that serves the memory benchmark's
// zone, so that its memory does not count against the engine's.
func runZoneServer(fs *flag.FlagSet, args []string) ([]row, error) {
	n := fs.Int("domains", 100000, "domains in the zone")
	fs.Parse(args)
	z := smtptest.NewZone()
	for i := 0; i < *n; i++ {
		d := fmt.Sprintf("d%d.mem.test", i)
		z.MX(d, 10, "mx."+d).A("mx."+d, memAddr(i))
	}
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		return nil, err
	}
	fmt.Println(srv.Addr)
	io.Copy(io.Discard, os.Stdin) // serve until the parent goes
	return nil, nil
}

// startZoneServer starts this program as a zone server for n domains.
func startZoneServer(n int) (addr string, stop func(), err error) {
	cmd := childOf(exec.Command(os.Args[0], "zone-server", "-domains", strconv.Itoa(n)))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return "", nil, fmt.Errorf("zone server: %w", err)
	}
	return strings.TrimSpace(line), func() { stdin.Close(); cmd.Wait() }, nil
}

// rss is this process's resident memory, after a full GC has returned what
// it can to the OS.
func rss() (resident int64, heap uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	b, _ := os.ReadFile("/proc/self/statm")
	fields := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return pages * int64(os.Getpagesize()), ms.HeapAlloc
}

// evaluateAll runs fn(0..n-1) on workers and reports progress at the marks.
func evaluateAll(n, workers int, fn func(i int), mark func(done int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	marks := map[int]bool{}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
				if mark != nil && (i+1)%(n/10) == 0 {
					mu.Lock()
					if !marks[i+1] {
						marks[i+1] = true
						mark(i + 1)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
}

func runMemory(fs *flag.FlagSet, args []string) ([]row, error) {
	domains := fs.Int("domains", 100000, "cached domains to measure")
	distinct := fs.Int("bounded", 1000000, "distinct domains for the bounded-cache run")
	parse(fs, args, "domains=2000", "bounded=25000")
	addr, stop, err := startZoneServer(*domains)
	if err != nil {
		return nil, err
	}
	defer stop()
	port, err := unusedPort()
	if err != nil {
		return nil, err
	}
	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{addr}
	cfg.Probe.Port = port
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Cache.DNSEntries, cfg.Cache.ProbeEntries = 4**domains, 2**domains

	engine, err := policy.New(cfg)
	if err != nil {
		return nil, err
	}
	before, heapBefore := rss()
	began := time.Now()
	evaluateAll(*domains, 64, func(i int) {
		engine.Evaluate(context.Background(), policy.Request{Sender: fmt.Sprintf("a@d%d.mem.test", i)})
	}, nil)
	took := time.Since(began)
	after, heapAfter := rss()
	dnsEntries, probeEntries := engine.DNSCacheStats().Entries, engine.ProbeCacheStats().Entries
	perDomain := float64(after-before) / float64(*domains)
	heapPerDomain := float64(heapAfter-heapBefore) / float64(*domains)
	fmt.Fprintf(os.Stderr, "%d domains cached in %v: %d DNS and %d probe entries, RSS %d → %d MiB\n",
		*domains, took.Round(time.Millisecond), dnsEntries, probeEntries, before>>20, after>>20)
	runtime.KeepAlive(engine)
	rows := []row{
		{"memory", fmt.Sprintf("RSS per cached domain (%d domains: MX, A, AAAA, probe)", *domains),
			fmt.Sprintf("%.0f bytes (heap %.0f bytes)", perDomain, heapPerDomain), "≤ 2 KiB " + verdict(perDomain <= 2048), false},
		{"memory", "cold evaluations (one MX, refused)", fmt.Sprintf("%.0f domains/s", float64(*domains)/took.Seconds()), "", false},
		// Each domain has its own MX address: a probe entry each, or the
		// bytes per domain are not what the row says.
		sanity("memory", "probe entries cached", fmt.Sprint(probeEntries), fmt.Sprint(*domains), probeEntries == *domains),
	}

	// A bounded cache under a flood of distinct (here nonexistent) domains.
	engine = nil
	cfg.Cache.DNSEntries, cfg.Cache.ProbeEntries = 10000, 10000
	bounded, err := policy.New(cfg)
	if err != nil {
		return nil, err
	}
	var samples []string
	var peak int64
	start, _ := rss()
	// First the zone's domains, each with its own MX address, so that the
	// probe cache overflows too; then nonexistent ones up to the total.
	evaluateAll(*distinct, 64, func(i int) {
		d := fmt.Sprintf("x%d.flood.test", i)
		if i < *domains {
			d = fmt.Sprintf("d%d.mem.test", i)
		}
		bounded.Evaluate(context.Background(), policy.Request{Domain: d})
	}, func(done int) {
		r, _ := rss()
		peak = max(peak, r)
		samples = append(samples, fmt.Sprintf("%dk:%dMiB", done/1000, r>>20))
	})
	growth := peak - start
	dnsN, probeN := bounded.DNSCacheStats().Entries, bounded.ProbeCacheStats().Entries
	rows = append(rows, row{"memory", fmt.Sprintf("bounded caches (10k entries each), %d distinct domains", *distinct),
		fmt.Sprintf("RSS %d MiB → peak %d MiB; %d DNS, %d probe entries (%s)", start>>20, peak>>20, dnsN, probeN, strings.Join(samples, " ")),
		"RSS grows < 64 MiB " + verdict(growth < 64<<20), false},
		sanity("memory", "bounded caches: DNS / probe entries", fmt.Sprintf("%d / %d", dnsN, probeN), "≤ 10000 / ≤ 10000", dnsN <= 10000 && probeN <= 10000))
	return rows, nil
}

// unusedPort is a loopback port with nothing listening: probes are refused.
func unusedPort() (uint16, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}
