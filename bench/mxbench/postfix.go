package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/mtalab"
)

// benchLab is a Postfix instance that discards what it accepts: the
// benchmark measures smtpd, cleanup and the milter, not delivery.
type benchLab struct {
	*mtalab.Lab
	name string
}

func startBenchLab(name, milter string) (*benchLab, error) {
	l, err := mtalab.Start("postfix", mtalab.Options{Milter: milter})
	if err != nil {
		return nil, fmt.Errorf("postfix %s: %w", name, err)
	}
	return &benchLab{l, name}, nil
}

// injection is one smtp-source run.
type injection struct {
	rate      float64       // messages per second
	cpu       time.Duration // CPU per message, every process on the machine
	milterCPU time.Duration // CPU per message of this process, where the milters run
}

// setup is one way to run Postfix: without a milter, or with one.
type setup struct{ name, milter string }

// runOnePostfix runs one setup alone, for a look with strace or perf.
func runOnePostfix(name string, setups []setup, sessions, messages int) ([]row, error) {
	var sock string
	found := false
	for _, s := range setups {
		if s.name == name {
			sock, found = s.milter, true
		}
	}
	if !found {
		return nil, fmt.Errorf("-only %q: want one of %v", name, setups)
	}
	l, err := startBenchLab(name, sock)
	if err != nil {
		return nil, err
	}
	defer l.Stop()
	in, err := l.inject(sessions, messages, "sender@"+benchDomain, "localhost.bench.test")
	if err != nil {
		return nil, err
	}
	return []row{{"postfix", name, fmt.Sprintf("%.0f msg/s, %s CPU/msg, %s in this process", in.rate, ms(in.cpu), ms(in.milterCPU)), ""}}, nil
}

// inject runs smtp-source against the instance.
func (l *benchLab) inject(sessions, messages int, from, helo string) (injection, error) {
	busy0, err := cpuBusy()
	if err != nil {
		return injection{}, err
	}
	self0 := selfCPU()
	began := time.Now()
	cmd := exec.Command("smtp-source", "-4", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages),
		"-f", from, "-t", "rcpt@remote.example", "-M", helo, "-l", "1024", l.Addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		return injection{}, fmt.Errorf("smtp-source against %s: %v: %s", l.name, err, out)
	}
	took := time.Since(began)
	busy1, err := cpuBusy()
	if err != nil {
		return injection{}, err
	}
	n := time.Duration(messages)
	return injection{float64(messages) / took.Seconds(), (busy1 - busy0) / n, (selfCPU() - self0) / n}, nil
}

// selfCPU is the user and system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuBusy is the machine's non-idle CPU time so far, from /proc/stat.
func cpuBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat")
	}
	var busy int64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		busy += v
	}
	return time.Duration(busy) * time.Second / 100, nil // USER_HZ
}

func runPostfix(fs *flag.FlagSet, args []string) ([]row, error) {
	sessions := fs.Int("sessions", 8, "parallel smtp-source sessions")
	messages := fs.Int("messages", 2000, "messages per round")
	rounds := fs.Int("rounds", 3, "alternating rounds per setup")
	cpuProfile := fs.String("cpuprofile", "", "write mxguard's CPU profile (its rounds only) to this file")
	only := fs.String("only", "", "run just this setup (bare, no-op, mxguard), e.g. under strace -c")
	fs.Parse(args)
	if _, err := exec.LookPath("smtp-source"); err != nil || os.Geteuid() != 0 {
		return nil, errors.New("needs root and Debian's postfix package (postfix, smtp-source)")
	}
	rig, err := startMilters()
	if err != nil {
		return nil, err
	}
	defer rig.close()
	sb, m, rec, mxAddr, noopAddr := rig.sb, rig.mxguard, rig.rec, rig.mxAddr, rig.noopAddr

	sockDir, err := os.MkdirTemp("", "mxbench-sock-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sockDir)
	os.Chmod(sockDir, 0o755)
	sock := filepath.Join(sockDir, "milter.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	os.Chmod(sock, 0o666) // smtpd runs as postfix
	go m.Serve(uln)
	setups := []setup{
		{"bare", ""}, {"no-op", "inet:" + noopAddr}, {"mxguard", "inet:" + mxAddr}, {"mxguard-unix", "unix:" + sock},
	}
	if *only != "" {
		return runOnePostfix(*only, setups, *sessions, *messages)
	}
	labs := make([]*benchLab, len(setups))
	for i, s := range setups {
		if labs[i], err = startBenchLab(s.name, s.milter); err != nil {
			return nil, err
		}
		defer labs[i].Stop()
	}
	from, helo := "sender@"+benchDomain, "localhost.bench.test"
	// Warm up every instance (process pools, mxguard's cache).
	for _, l := range labs {
		if _, err := l.inject(*sessions, 200, from, helo); err != nil {
			return nil, err
		}
		if err := l.Drained(2 * time.Minute); err != nil {
			return nil, err
		}
	}
	rec.take()
	dnsBefore := sb.DNS.Queries()
	rates := make([][]float64, len(labs))
	cpus := make([][]float64, len(labs))
	milterCPUs := make([][]float64, len(labs))
	var prof *os.File
	if *cpuProfile != "" {
		if prof, err = os.Create(*cpuProfile); err != nil {
			return nil, err
		}
		defer prof.Close()
	}
	for r := 0; r < *rounds; r++ {
		for i, l := range labs {
			if prof != nil && setups[i].name == "mxguard" {
				pprof.StartCPUProfile(prof)
			}
			in, err := l.inject(*sessions, *messages, from, helo)
			if prof != nil && setups[i].name == "mxguard" {
				pprof.StopCPUProfile()
				prof = nil // one round is enough for the profile
			}
			if err != nil {
				return nil, err
			}
			rates[i] = append(rates[i], in.rate)
			cpus[i] = append(cpus[i], float64(in.cpu))
			milterCPUs[i] = append(milterCPUs[i], float64(in.milterCPU))
			if err := l.Drained(2 * time.Minute); err != nil {
				return nil, err
			}
			fmt.Fprintf(os.Stderr, "round %d: %-8s %6.0f msg/s, %.3f ms CPU/msg, milter %.3f ms\n", r+1, l.name, in.rate, float64(in.cpu)/1e6, float64(in.milterCPU)/1e6)
		}
	}
	decisions := rec.take()
	rate := func(i int) float64 { return median(rates[i]) }
	cpu := func(i int) time.Duration { return time.Duration(median(cpus[i])) }
	milterCPU := func(i int) time.Duration { return time.Duration(median(milterCPUs[i])) }
	mxVsNoop := rate(2) / rate(1)
	over := func(i int) time.Duration { return cpu(i) - cpu(0) }
	rows := []row{
		{"postfix", fmt.Sprintf("Postfix, no milter (%d sessions, %d msgs/round, median of %d)", *sessions, *messages, *rounds), fmt.Sprintf("%.0f msg/s, %s CPU/msg", rate(0), ms(cpu(0))), ""},
		{"postfix", "Postfix + no-op go-milter", fmt.Sprintf("%.0f msg/s, %s CPU/msg (%.0f%% of bare)", rate(1), ms(cpu(1)), 100*rate(1)/rate(0)), ""},
		{"postfix", "Postfix + mxguard (warm)", fmt.Sprintf("%.0f msg/s, %s CPU/msg (%.0f%% of bare)", rate(2), ms(cpu(2)), 100*rate(2)/rate(0)), ""},
		{"postfix", "mxguard / no-op throughput", fmt.Sprintf("%.1f%%", 100*mxVsNoop), "≥ 95% " + verdict(mxVsNoop >= 0.95)},
		{"postfix", "CPU over bare: no-op / mxguard", ms(over(1)) + " / " + ms(over(2)), "mxguard < no-op " + verdict(over(2) < over(1))},
		{"postfix", "CPU in the milter process: no-op / mxguard", ms(milterCPU(1)) + " / " + ms(milterCPU(2)), ""},
		{"postfix", "Postfix + mxguard on a unix socket", fmt.Sprintf("%.0f msg/s, %s CPU/msg (%.0f%% of bare), %s over bare", rate(3), ms(cpu(3)), 100*rate(3)/rate(0), ms(over(3))), ""},
		{"postfix", "mxguard decision latency p50 / p99", ms(percentile(decisions, 50)) + " / " + ms(percentile(decisions, 99)), ""},
		{"postfix", "DNS queries during the warm rounds", fmt.Sprint(sb.DNS.Queries() - dnsBefore), "0 " + verdict(sb.DNS.Queries() == dnsBefore)},
		{"postfix", "messages mxguard decided (TCP and unix rounds)", fmt.Sprint(len(decisions)),
			fmt.Sprintf("%d %s", 2**rounds**messages, verdict(len(decisions) == 2**rounds**messages))},
	}
	return rows, nil
}
