// Command mxbench measures mxguard: milter throughput against a no-op
// milter, Postfix end to end, the cold path, a stampede, memory per cached
// domain, batch checks and inventory audits. Every comparison runs side by side in one
// process, in alternating rounds, because the machines are shared and noisy.
//
//	go run ./bench/mxbench all          # every benchmark, one table
//	go run ./bench/mxbench milter       # one of: milter postfix cold stampede memory batch audit fleet
//	go run ./bench/mxbench all -quick   # seconds, tiny counts: the checks only (main_test.go)
//
// A row whose goal is a sanity check (the decisions pass, nothing is asked
// twice, the counts add up) must hold in every run, a quick one too: when
// one fails, or a benchmark stops with an error, mxbench exits 1.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/internal/redislab"
)

// row is one line of the results table; broken marks a failed sanity check.
type row struct {
	bench, metric, value, goal string
	broken                     bool
}

// sanity is a row whose goal is a property of a run that measures what it
// says, not a figure to reach: the goal, then "ok" or "FAILED".
func sanity(bench, metric, value, goal string, ok bool) row {
	if ok {
		return row{bench, metric, value, goal + " ok", false}
	}
	return row{bench, metric, value, goal + " FAILED", true}
}

// parse parses a benchmark's flags. With -quick the flags in quick
// ("name=value") take those values unless given: a run of seconds that
// still makes every sanity check.
func parse(fs *flag.FlagSet, args []string, quick ...string) {
	q := fs.Bool("quick", false, "seconds and tiny counts, for the checks: "+strings.Join(quick, " "))
	fs.Parse(args)
	if !*q {
		return
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, kv := range quick {
		name, value, _ := strings.Cut(kv, "=")
		if !given[name] {
			if err := fs.Set(name, value); err != nil {
				panic(err) // a typo in a quick list
			}
		}
	}
}

var benches = []struct {
	name  string
	run   func(*flag.FlagSet, []string) ([]row, error)
	needs func() error // why it cannot run here, or nil; nil: nothing
}{
	{"milter", runMilter, nil},
	{"postfix", runPostfix, postfixNeeds},
	{"message", runMessage, postfixNeeds},
	{"cold", runCold, nil},
	{"stampede", runStampede, nil},
	{"memory", runMemory, nil},
	{"batch", runBatch, nil},
	{"audit", runAudit, nil},
	{"fleet", runFleet, redislab.Available},
}

func main() {
	// Go when the parent goes: "go run" (bench/*.sh) dies of a SIGTERM or
	// a timeout without passing it on. What mxbench starts (Postfix
	// masters, redis-server, mxguard) goes with it in turn (childOf).
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)
	if os.Getppid() == 1 { // the parent went before the line above
		os.Exit(1)
	}
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
		if name == "all" && !slices.Equal(args, []string{"-quick"}) {
			args = nil
		}
		fmt.Fprintf(os.Stderr, "== %s\n", b.name)
		r, err := b.run(fs, args)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mxbench %s: %v\n", b.name, err)
			rows = append(rows, row{b.name, "error", err.Error(), "", true})
			continue
		}
		rows = append(rows, r...)
	}
	if !found {
		usage()
	}
	printTable(rows)
	if slices.ContainsFunc(rows, func(r row) bool { return r.broken }) {
		os.Exit(1)
	}
}

// childOf makes cmd end when this process does, in any way: the kernel
// sends it SIGTERM.
func childOf(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd
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
