// Command mxbench measures mxguard: milter throughput against a no-op
// milter, Postfix end to end, the cold path, a stampede, memory per cached
// domain, batch checks and inventory audits. Every comparison runs side by side in one
// process, in alternating rounds, because the machines are shared and noisy.
//
//	go run ./bench/mxbench all          # every benchmark, one table
//	go run ./bench/mxbench milter       # one of: milter postfix cold stampede memory batch audit fleet
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the results table.
type row struct {
	bench, metric, value, goal string
}

var benches = []struct {
	name string
	run  func(*flag.FlagSet, []string) ([]row, error)
}{
	{"milter", runMilter},
	{"postfix", runPostfix},
	{"cold", runCold},
	{"stampede", runStampede},
	{"memory", runMemory},
	{"batch", runBatch},
	{"audit", runAudit},
	{"fleet", runFleet},
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	if os.Args[1] == "zone-server" { // the memory benchmark's child process
		if _, err := runZoneServer(flag.NewFlagSet("zone-server", flag.ExitOnError), os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var rows []row
	name := os.Args[1]
	found := false
	for _, b := range benches {
		if name != "all" && name != b.name {
			continue
		}
		found = true
		fs := flag.NewFlagSet(b.name, flag.ExitOnError)
		args := os.Args[2:]
		if name == "all" {
			args = nil
		}
		fmt.Fprintf(os.Stderr, "== %s\n", b.name)
		r, err := b.run(fs, args)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mxbench %s: %v\n", b.name, err)
			rows = append(rows, row{b.name, "error", err.Error(), ""})
			continue
		}
		rows = append(rows, r...)
	}
	if !found {
		usage()
	}
	printTable(rows)
}

func usage() {
	names := make([]string, len(benches))
	for i, b := range benches {
		names[i] = b.name
	}
	fmt.Fprintf(os.Stderr, "usage: mxbench all|%s [flags]\n", strings.Join(names, "|"))
	os.Exit(64)
}

func printTable(rows []row) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tMETRIC\tVALUE\tGOAL")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.bench, r.metric, r.value, r.goal)
	}
	tw.Flush()
}

// percentile returns the p-th percentile (0-100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// median returns the median of xs.
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
