package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// runMessage measures what the message checks cost through Postfix:
// mxguard with checks.message off and on, side by side in alternating
// rounds, for signed and aligned messages of 10 KB, 100 KB and 1 MB.
func runMessage(fs *flag.FlagSet, args []string) ([]row, error) {
	sessions := fs.Int("sessions", 8, "parallel smtp-source sessions")
	messages := fs.Int("messages", 1000, "10 KB messages per round (100 KB: a quarter, 1 MB: a twentieth)")
	rounds := fs.Int("rounds", 3, "alternating rounds per setup and size")
	cpuProfile := fs.String("cpuprofile", "", "write the CPU profile of the 10 KB rounds with checks.message on to this file")
	parse(fs, args, "sessions=2", "messages=40", "rounds=1")
	if err := postfixNeeds(); err != nil {
		return nil, err
	}
	sb, err := newBenchSandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	signer, err := smtptest.NewDKIMSigner(benchDomain, "bench", 2048)
	if err != nil {
		return nil, err
	}
	sb.Zone.DKIMKey(signer)
	engine, err := policy.New(sb.cfg)
	if err != nil {
		return nil, err
	}
	rec := &latencies{}
	var setups []setup
	for _, on := range []bool{false, true} {
		m := milter.New(&milter.Config{Engine: engine, HeaderName: "X-MXGuard", DecisionTimeout: 20 * time.Second},
			milter.Options{Message: on, Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		go m.Serve(ln)
		defer ln.Close()
		setups = append(setups, setup{fmt.Sprintf("checks.message=%v", on), "inet:" + ln.Addr().String(), ""})
	}
	labs := make([]*benchLab, len(setups))
	for i, s := range setups {
		if labs[i], err = startBenchLab(s); err != nil {
			return nil, err
		}
		defer labs[i].Stop()
	}
	dir, err := os.MkdirTemp("", "mxbench-message-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sizes := []struct {
		name  string
		bytes int
		share int // of -messages
	}{{"10 KB", 10 << 10, 1}, {"100 KB", 100 << 10, 4}, {"1 MB", 1 << 20, 20}}
	files := make([]string, len(sizes))
	for i, size := range sizes {
		if files[i], err = signedMessageFile(dir, signer, size.bytes); err != nil {
			return nil, err
		}
	}
	from, helo := "sender@"+benchDomain, "localhost.bench.test"
	for _, l := range labs { // warm up: process pools, mxguard's caches
		if _, err := l.inject(*sessions, min(100, *messages), from, helo, "-F", files[0]); err != nil {
			return nil, err
		}
		if err := l.Drained(2 * time.Minute); err != nil {
			return nil, err
		}
	}
	rec.take()
	waited0, upstream0 := sb.lookups.waited.Load(), sb.lookups.upstream.Load()
	cpu := make([][][]float64, len(sizes)) // size, setup, round
	relayCPU := make([][][]float64, len(sizes))
	rate := make([][][]float64, len(sizes))
	var peakPerSession float64
	for s := range sizes {
		cpu[s], relayCPU[s], rate[s] = make([][]float64, len(labs)), make([][]float64, len(labs)), make([][]float64, len(labs))
		n := max(*messages/sizes[s].share, *sessions)
		for r := 0; r < *rounds; r++ {
			for i, l := range labs {
				var stop func() float64
				if s == len(sizes)-1 && i == 1 {
					stop = sampleHeap()
				}
				profiling := *cpuProfile != "" && s == 0 && i == 1
				if profiling {
					if err := startProfile(*cpuProfile, r); err != nil {
						return nil, err
					}
				}
				in, err := l.inject(*sessions, n, from, helo, "-F", files[s])
				if profiling {
					pprof.StopCPUProfile()
				}
				if err != nil {
					return nil, err
				}
				if stop != nil {
					peakPerSession = max(peakPerSession, stop()/float64(*sessions))
				}
				cpu[s][i] = append(cpu[s][i], float64(in.milterCPU))
				relayCPU[s][i] = append(relayCPU[s][i], float64(in.cpu))
				rate[s][i] = append(rate[s][i], in.rate)
				if err := l.Drained(5 * time.Minute); err != nil {
					return nil, err
				}
				fmt.Fprintf(os.Stderr, "%s round %d: %-20s %6.0f msg/s, mxguard %.3f ms CPU/msg\n", sizes[s].name, r+1, l.name, in.rate, float64(in.milterCPU)/1e6)
			}
		}
	}
	decisions := rec.take()
	var rows []row
	for s, size := range sizes {
		off, on := median(cpu[s][0]), median(cpu[s][1])
		extra := on/off - 1
		goal := ""
		if s == 0 {
			goal = "≤ 10% " + verdict(extra <= 0.10)
		}
		rows = append(rows,
			row{"message", fmt.Sprintf("CPU in mxguard's process per %s message, checks.message off / on", size.name),
				fmt.Sprintf("%s / %s (%+.0f%%)", ms(time.Duration(off)), ms(time.Duration(on)), 100*extra), goal, false},
			row{"message", fmt.Sprintf("CPU of the whole machine (Postfix, smtp-source, mxguard) per %s message, off / on", size.name),
				fmt.Sprintf("%s / %s (%+.0f%%)", ms(time.Duration(median(relayCPU[s][0]))), ms(time.Duration(median(relayCPU[s][1]))),
					100*(median(relayCPU[s][1])/median(relayCPU[s][0])-1)), "", false},
			row{"message", fmt.Sprintf("Postfix throughput, %s messages, off / on", size.name),
				fmt.Sprintf("%.0f / %.0f msg/s", median(rate[s][0]), median(rate[s][1])), "", false})
	}
	want := 0
	for _, size := range sizes {
		want += 2 * *rounds * max(*messages/size.share, *sessions)
	}
	rows = append(rows,
		row{"message", "live heap per session streaming 1 MB messages (peak over idle)", fmt.Sprintf("%.0f KiB", peakPerSession/1024), "", false},
		sanity("message", "messages decided", fmt.Sprint(len(decisions)), fmt.Sprint(want), len(decisions) == want),
		sanity("message", "decisions that did not pass (signed and aligned mail)", fmt.Sprint(rec.notPassed.Load()), "0", rec.notPassed.Load() == 0),
	)
	return append(rows, sb.lookups.since("message", "measured rounds", waited0, upstream0)...), nil
}

// signedMessageFile writes a message of about size octets, signed for
// benchDomain, in the form smtp-source -F sends (LF line ends, which it
// sends as CRLF).
func signedMessageFile(dir string, signer *smtptest.DKIMSigner, size int) (string, error) {
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
	msg := fmt.Sprintf("From: Sender <sender@%s>\r\nTo: <rcpt@remote.example>\r\nSubject: benchmark\r\n"+
		"Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench-%d@bench.test>\r\n\r\n%s",
		benchDomain, size, strings.Repeat(line, size/len(line)))
	signed, err := signer.Sign(msg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("message-%d.eml", size))
	return path, os.WriteFile(path, []byte(strings.ReplaceAll(signed, "\r\n", "\n")), 0o644)
}

// startProfile starts the CPU profile of round r into path: the rounds'
// profiles go to path, path.2, path.3 ...
func startProfile(path string, r int) error {
	if r > 0 {
		path = fmt.Sprintf("%s.%d", path, r+1)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return pprof.StartCPUProfile(f)
}

// sampleHeap samples the live heap (as the last GC found it: what is
// held, not what awaits collection) until the returned function is called,
// which returns its peak over the level at the start.
func sampleHeap() func() float64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() float64 {
		metrics.Read(sample)
		return float64(sample[0].Value.Uint64())
	}
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v := uint64(read()); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	return func() float64 {
		close(done)
		<-stopped
		return max(float64(peak.Load())-base, 0)
	}
}
