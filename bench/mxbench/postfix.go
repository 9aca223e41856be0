package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/mxguard/mxguard/internal/mtalab"
	"github.com/mxguard/mxguard/postfixpolicy"
)

// benchLab is a Postfix instance that discards what it accepts: the
// benchmark measures smtpd, cleanup and the milter, not delivery.
type benchLab struct {
	*mtalab.Lab
	name string
}

func startBenchLab(s setup) (*benchLab, error) {
	l, err := mtalab.Start("postfix", mtalab.Options{Milter: s.milter, PolicyService: s.policy})
	if err != nil {
		return nil, fmt.Errorf("postfix %s: %w", s.name, err)
	}
	return &benchLab{l, s.name}, nil
}

// injection is one smtp-source run.
type injection struct {
	rate      float64       // messages per second
	cpu       time.Duration // CPU per message, every process on the machine
	milterCPU time.Duration // CPU per message of this process, where the milters run
}

// setup is one way to run Postfix: without a milter, with one, or with
// mxguard's policy service.
type setup struct{ name, milter, policy string }

// runOnePostfix runs one setup alone, for a look with strace or perf.
func runOnePostfix(name string, setups []setup, sessions, messages int, cpuProfile string) ([]row, error) {
	i := slices.IndexFunc(setups, func(s setup) bool { return s.name == name })
	if i < 0 {
		return nil, fmt.Errorf("-only %q: want one of %v", name, setups)
	}
	l, err := startBenchLab(setups[i])
	if err != nil {
		return nil, err
	}
	defer l.Stop()
	if cpuProfile != "" {
		if err := startProfile(cpuProfile, 0); err != nil {
			return nil, err
		}
	}
	in, err := l.inject(sessions, messages, "sender@"+benchDomain, "localhost.bench.test")
	pprof.StopCPUProfile()
	if err != nil {
		return nil, err
	}
	return []row{{"postfix", name, fmt.Sprintf("%.0f msg/s, %s CPU/msg, %s in this process", in.rate, ms(in.cpu), ms(in.milterCPU)), "", false}}, nil
}

// inject runs smtp-source against the instance, sending payload (its
// flags; none: 1 KiB of its own).
func (l *benchLab) inject(sessions, messages int, from, helo string, payload ...string) (injection, error) {
	if len(payload) == 0 {
		payload = []string{"-l", "1024"}
	}
	busy0, err := cpuBusy()
	if err != nil {
		return injection{}, err
	}
	self0 := selfCPU()
	began := time.Now()
	args := append([]string{"-4", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages),
		"-f", from, "-t", "rcpt@remote.example", "-M", helo}, payload...)
	cmd := childOf(exec.Command("smtp-source", append(args, l.Addr)...))
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

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

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

// serveFloorPolicy serves Postfix's policy protocol doing nothing but
// answer DUNNO: what any policy service costs Postfix (a request per
// recipient on a persistent connection, and a Go process woken for it).
func serveFloorPolicy(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 1 { // the empty line that ends a request
					if _, err := c.Write([]byte("action=DUNNO\n\n")); err != nil {
						return
					}
				}
			}
		}()
	}
}

// floorMilterSteps skips every step the milter protocol lets a milter
// skip: what is left (a connection and negotiation per SMTP session, end
// of message answered) is what any milter costs Postfix.
const floorMilterSteps = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
	gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH |
	gomilter.OptNoUnknown | gomilter.OptNoData

// postfixNeeds says why the Postfix benchmark cannot run here, or nil.
func postfixNeeds() error {
	if err := mtalab.Available("postfix"); err != nil {
		return err
	}
	if _, err := exec.LookPath("smtp-source"); err != nil {
		return errors.New("smtp-source is not installed (Debian's postfix package has it)")
	}
	return nil
}

func runPostfix(fs *flag.FlagSet, args []string) ([]row, error) {
	sessions := fs.Int("sessions", 8, "parallel smtp-source sessions")
	messages := fs.Int("messages", 2000, "messages per round")
	rounds := fs.Int("rounds", 3, "alternating rounds per setup")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file: of one mxguard milter round, or of the -only run")
	only := fs.String("only", "", "run just this setup (bare, policy-floor, policy, milter-floor, no-op, mxguard, mxguard-unix), e.g. under strace -c")
	parse(fs, args, "sessions=2", "messages=40", "rounds=1")
	if err := postfixNeeds(); err != nil {
		return nil, err
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
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ps := postfixpolicy.New(&postfixpolicy.Config{Engine: rig.engine, HeaderName: "X-MXGuard", DecisionTimeout: 20 * time.Second},
		postfixpolicy.Options{Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go ps.Serve(pln)
	defer ps.Shutdown(context.Background())
	floorPolicy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer floorPolicy.Close()
	go serveFloorPolicy(floorPolicy)
	// On a unix socket: over TCP, a milter that answers nothing before end
	// of message stalls on delayed ACKs (see docs/BENCHMARKS.md), which
	// mxguard avoids and the floor should not measure.
	floorSock := filepath.Join(sockDir, "floor.sock")
	floorMilter, err := net.Listen("unix", floorSock)
	if err != nil {
		return nil, err
	}
	os.Chmod(floorSock, 0o666)
	defer floorMilter.Close()
	go (&gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }, Protocol: floorMilterSteps}).Serve(floorMilter)
	setups := []setup{
		{"bare", "", ""}, {"policy-floor", "", "inet:" + floorPolicy.Addr().String()},
		{"policy", "", "inet:" + pln.Addr().String()}, {"milter-floor", "unix:" + floorSock, ""},
		{"no-op", "inet:" + noopAddr, ""}, {"mxguard", "inet:" + mxAddr, ""}, {"mxguard-unix", "unix:" + sock, ""},
	}
	if *only != "" {
		return runOnePostfix(*only, setups, *sessions, *messages, *cpuProfile)
	}
	labs := make([]*benchLab, len(setups))
	for i, s := range setups {
		if labs[i], err = startBenchLab(s); err != nil {
			return nil, err
		}
		defer labs[i].Stop()
	}
	from, helo := "sender@"+benchDomain, "localhost.bench.test"
	// Warm up every instance (process pools, mxguard's cache).
	for _, l := range labs {
		if _, err := l.inject(*sessions, min(200, *messages), from, helo); err != nil {
			return nil, err
		}
		if err := l.Drained(2 * time.Minute); err != nil {
			return nil, err
		}
	}
	rec.take()
	dnsBefore := sb.DNS.Queries()
	waited0, upstream0 := sb.lookups.waited.Load(), sb.lookups.upstream.Load()
	warmBegan := time.Now()
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
	const bare, policyFloor, policySvc, milterFloor, noop, mx, mxUnix = 0, 1, 2, 3, 4, 5, 6
	rate := func(i int) float64 { return median(rates[i]) }
	cpu := func(i int) time.Duration { return time.Duration(median(cpus[i])) }
	milterCPU := func(i int) time.Duration { return time.Duration(median(milterCPUs[i])) }
	of := func(i, base int) float64 { return rate(i) / rate(base) }
	over := func(i int) time.Duration { return cpu(i) - cpu(bare) }
	line := func(i int) string {
		return fmt.Sprintf("%.0f msg/s, %s CPU/msg (%.0f%% of bare), %s over bare", rate(i), ms(cpu(i)), 100*of(i, bare), ms(over(i)))
	}
	want := 3 * *rounds * *messages // the policy, TCP and unix rounds
	rows := []row{
		{"postfix", fmt.Sprintf("Postfix, no milter (%d sessions, %d msgs/round, median of %d)", *sessions, *messages, *rounds), fmt.Sprintf("%.0f msg/s, %s CPU/msg", rate(bare), ms(cpu(bare))), "", false},
		{"postfix", "Postfix + a policy service that only answers DUNNO (the floor)", line(policyFloor), "", false},
		{"postfix", "Postfix + mxguard policy service (warm)", line(policySvc), "", false},
		{"postfix", "policy service / bare throughput", pct(of(policySvc, bare)), "≥ 92% " + verdict(of(policySvc, bare) >= 0.92), false},
		{"postfix", "policy service / the floor's throughput", pct(of(policySvc, policyFloor)), "", false},
		{"postfix", "policy service CPU over bare", ms(over(policySvc)), "", false},
		{"postfix", "Postfix + a milter that skips every step it can (the floor, unix socket)", line(milterFloor), "", false},
		{"postfix", "Postfix + no-op go-milter", line(noop), "", false},
		{"postfix", "Postfix + mxguard milter (warm)", line(mx), "", false},
		{"postfix", "milter / bare throughput", pct(of(mx, bare)), "≥ 70% " + verdict(of(mx, bare) >= 0.7), false},
		{"postfix", "milter / no-op throughput", pct(of(mx, noop)), "≥ 95% " + verdict(of(mx, noop) >= 0.95), false},
		{"postfix", "CPU over bare: no-op / mxguard milter", ms(over(noop)) + " / " + ms(over(mx)), "mxguard < no-op " + verdict(over(mx) < over(noop)), false},
		{"postfix", "CPU in the process per message: policy floor / policy / milter floor / no-op milter", ms(milterCPU(policyFloor)) + " / " + ms(milterCPU(policySvc)) + " / " + ms(milterCPU(milterFloor)) + " / " + ms(milterCPU(noop)), "", false},
		{"postfix", "CPU in mxguard's process per message: policy service", ms(milterCPU(policySvc)), "≤ 0.2 ms " + verdict(milterCPU(policySvc) <= 200*time.Microsecond), false},
		{"postfix", "CPU in mxguard's process per message: milter over TCP", ms(milterCPU(mx)), "≤ 0.5 ms " + verdict(milterCPU(mx) <= 500*time.Microsecond), false},
		{"postfix", "Postfix + mxguard milter on a unix socket", line(mxUnix), "", false},
		{"postfix", "milter on a unix socket / bare throughput", pct(of(mxUnix, bare)), "≥ 78% " + verdict(of(mxUnix, bare) >= 0.78), false},
		{"postfix", "milter on a unix socket / the floor's throughput (both on unix sockets)", pct(of(mxUnix, milterFloor)), "", false},
		{"postfix", "mxguard decision latency p50 / p99", ms(percentile(decisions, 50)) + " / " + ms(percentile(decisions, 99)), "", false},
		{"postfix", fmt.Sprintf("DNS queries during the warm rounds (%v)", time.Since(warmBegan).Round(time.Second)), fmt.Sprint(sb.DNS.Queries() - dnsBefore), "", false},
		sanity("postfix", "messages mxguard decided (policy, TCP and unix rounds)", fmt.Sprint(len(decisions)), fmt.Sprint(want), len(decisions) == want),
		sanity("postfix", "decisions that did not pass", fmt.Sprint(rec.notPassed.Load()), "0", rec.notPassed.Load() == 0),
	}
	return append(rows, sb.lookups.since("postfix", "warm rounds", waited0, upstream0)...), nil
}
