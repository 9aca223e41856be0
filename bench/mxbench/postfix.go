package main

import (
	"bufio"
	"context"
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

	"github.com/mxguard/mxguard/policy"
)

// A Postfix instance with default_transport = discard: it measures smtpd,
// cleanup and the milter, not delivery.
const benchMainCf = `compatibility_level = 3.6
queue_directory = {{LAB}}/spool
data_directory = {{LAB}}/data
myhostname = mta.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
relayhost =
default_transport = discard:benchmark
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
syslog_name = mxbench
maillog_file = {{LAB}}/maillog
maillog_file_prefixes = {{LAB}}
biff = no
default_process_limit = 200
`

const benchMasterCf = `127.0.0.1:{{SMTPD}} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000    0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// benchLab is one private Postfix instance.
type benchLab struct {
	name string
	dir  string
	port int
}

func (l *benchLab) etc() string { return filepath.Join(l.dir, "etc") }

// startBenchLab starts Postfix on a free port; milter is "" or a socket.
func startBenchLab(name, milter string) (*benchLab, error) {
	dir, err := os.MkdirTemp("", "mxbench-"+name+"-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	l := &benchLab{name: name, dir: dir, port: port}
	fill := strings.NewReplacer("{{LAB}}", dir, "{{SMTPD}}", strconv.Itoa(port))
	mainCf := fill.Replace(benchMainCf)
	if milter != "" {
		snippet, err := os.ReadFile("configs/postfix/main.cf") // the documented settings
		if err != nil {
			return nil, fmt.Errorf("run mxbench from the repository root: %w", err)
		}
		mainCf += strings.ReplaceAll(string(snippet), "inet:127.0.0.1:8891", milter)
	}
	os.MkdirAll(l.etc(), 0o755)
	os.MkdirAll(filepath.Join(dir, "spool"), 0o755)
	if err := os.WriteFile(filepath.Join(l.etc(), "main.cf"), []byte(mainCf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.etc(), "master.cf"), []byte(fill.Replace(benchMasterCf)), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"-c", l.etc(), "check"}, {"-c", l.etc(), "start"}} {
		if out, err := exec.Command("postfix", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("postfix %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.DialTimeout("tcp", l.addr(), time.Second)
		if err == nil {
			c.Close()
			return l, nil
		}
		if time.Now().After(deadline) {
			l.stop()
			return nil, fmt.Errorf("postfix %s does not listen: %w", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *benchLab) addr() string { return fmt.Sprintf("127.0.0.1:%d", l.port) }

func (l *benchLab) stop() {
	exec.Command("postfix", "-c", l.etc(), "stop").Run()
	os.RemoveAll(l.dir)
}

// drained waits until the queue is empty, so that delivery of one round
// does not eat into the next.
func (l *benchLab) drained() error {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err := exec.Command("postqueue", "-c", l.etc(), "-j").Output()
		if err != nil {
			return err
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			return nil
		}
	}
	return fmt.Errorf("postfix %s: the queue does not drain", l.name)
}

// injection is one smtp-source run.
type injection struct {
	rate      float64       // messages per second
	cpu       time.Duration // CPU per message, every process on the machine
	milterCPU time.Duration // CPU per message of this process, where the milters run
}

// runOnePostfix runs one setup alone, for a look with strace or perf.
func runOnePostfix(name, _, noopAddr, mxAddr string, sessions, messages int) ([]row, error) {
	milter := map[string]string{"bare": "", "no-op": "inet:" + noopAddr, "mxguard": "inet:" + mxAddr}
	sock, ok := milter[name]
	if !ok {
		return nil, fmt.Errorf("-only %q: want bare, no-op or mxguard", name)
	}
	l, err := startBenchLab(name, sock)
	if err != nil {
		return nil, err
	}
	defer l.stop()
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
		"-f", from, "-t", "rcpt@remote.example", "-M", helo, "-l", "1024", l.addr())
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
	sb, err := newBenchSandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	engine, err := policy.New(sb.cfg)
	if err != nil {
		return nil, err
	}
	rec := &latencies{}
	m, mxAddr, err := serveMxguard(engine, rec)
	if err != nil {
		return nil, err
	}
	defer m.Shutdown(context.Background())
	stopNoop, noopAddr, err := serveNoop()
	if err != nil {
		return nil, err
	}
	defer stopNoop()

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
	setups := []struct{ name, milter string }{
		{"bare", ""}, {"no-op", "inet:" + noopAddr}, {"mxguard", "inet:" + mxAddr}, {"mxguard-unix", "unix:" + sock},
	}
	if *only != "" {
		return runOnePostfix(*only, setups[0].milter, noopAddr, mxAddr, *sessions, *messages)
	}
	labs := make([]*benchLab, len(setups))
	for i, s := range setups {
		if labs[i], err = startBenchLab(s.name, s.milter); err != nil {
			return nil, err
		}
		defer labs[i].stop()
	}
	from, helo := "sender@"+benchDomain, "localhost.bench.test"
	// Warm up every instance (process pools, mxguard's cache).
	for _, l := range labs {
		if _, err := l.inject(*sessions, 200, from, helo); err != nil {
			return nil, err
		}
		if err := l.drained(); err != nil {
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
			if err := l.drained(); err != nil {
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
	}
	return rows, nil
}
