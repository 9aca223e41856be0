package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/policy"
)

const checkUsage = `Usage: mxguard check [flags] DOMAIN|ADDRESS...
       mxguard check [flags] --file FILE   (one domain or address per line; "-" reads stdin)
       mxguard check [flags] --message FILE   (an RFC 5322 message; "-" reads stdin)

Runs the same checks as the milter and prints one report per domain.
Exit status: 0 pass, 1 flag/hold, 2 defer/reject, 3 only temporary errors
(the checks could not finish), 64 usage or configuration error; with several
domains, the worst of them.

Flags:
`

// checkOptions are the parsed flags of `mxguard check`.
type checkOptions struct {
	configFile  string
	resolvers   listFlag
	probePort   string
	allowNets   listFlag
	outbound    listFlag
	clientIP    string
	helo        string
	jsonOut     bool
	file        string
	concurrency int
	self        bool
	message     string
	mailFrom    string
	set         map[string]bool // flags given, even if empty
}

// checkFlagSet is the flag set of `mxguard check`, parsed into o.
func checkFlagSet(o *checkOptions, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage); fs.PrintDefaults() }
	fs.StringVar(&o.configFile, "config", "", "configuration `FILE` (default: the built-in configs/mxguard.yaml)")
	fs.Var(&o.resolvers, "resolver", "recursive resolver `HOST:PORT` to use instead of resolver.servers (repeatable)")
	fs.StringVar(&o.probePort, "probe-port", "", "probe MX hosts on port `N` instead of probe.port (test sandboxes)")
	fs.Var(&o.allowNets, "allow-net", "also probe special-purpose addresses in `CIDR` (repeatable; e.g. 127.0.0.0/8 for a sandbox)")
	fs.Var(&o.outbound, "outbound-ip", "an outbound IP or `CIDR` of the relay, added to outbound.ips (repeatable)")
	fs.StringVar(&o.clientIP, "client-ip", "", "check the sending host at `IP` (PTR, FCrDNS; always checked, even if in identity.skip_networks)")
	fs.StringVar(&o.helo, "helo", "", "the HELO/EHLO `NAME` the sending host uses")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object per domain per line")
	fs.StringVar(&o.file, "file", "", "read domains or addresses from `FILE`, one per line (\"-\": stdin)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "domains checked at once with --file")
	fs.BoolVar(&o.self, "self", false, "check this relay itself: each single outbound.ips address with outbound.helo (or --helo)")
	fs.StringVar(&o.message, "message", "", "check the message in `FILE` (RFC 5322; \"-\": stdin) as the milter does after the relay's signer: the message checks, and the domain checks of its envelope sender and author")
	fs.StringVar(&o.mailFrom, "mail-from", "", "the envelope sender `ADDRESS` of --message (default: its Return-Path, else its From address)")
	return fs
}

func runCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o checkOptions
	fs := checkFlagSet(&o, stderr)
	targets, err := parseInterspersed(fs, args)
	if err != nil {
		return usageError(stderr, err)
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.self && (len(targets) > 0 || o.file != "" || o.set["client-ip"]) {
		return usageError(stderr, errors.New("--self checks the relay itself: it takes no domains, --file or --client-ip"))
	}
	if o.set["mail-from"] && o.message == "" {
		return usageError(stderr, errors.New("--mail-from is the envelope of --message"))
	}
	if o.message != "" && (o.self || len(targets) > 0 || o.file != "") {
		return usageError(stderr, errors.New("--message checks one message: it takes no domains, --file or --self"))
	}
	if !o.self && o.message == "" && (len(targets) == 0) == (o.file == "") {
		fmt.Fprint(stderr, "mxguard check: name domains or addresses, or --file, but not both\n\n")
		fs.Usage()
		return exitUsage
	}
	if o.concurrency < 1 {
		return usageError(stderr, errors.New("--concurrency must be at least 1"))
	}
	cfg, client, err := o.engineConfig()
	if err != nil {
		return usageError(stderr, err)
	}
	engine, err := policy.New(cfg)
	if err != nil {
		return usageError(stderr, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := newPrinter(stdout, o.jsonOut)
	if o.self {
		return runSelfCheck(ctx, engine, cmp.Or(o.helo, engine.Config().EgressHELO), out, stderr)
	}
	base := policy.Request{ClientIP: client, HELO: o.helo}
	if o.message != "" {
		return runMessageCheck(ctx, engine, base, o, stdin, out, stderr)
	}
	var in io.Reader = strings.NewReader(strings.Join(targets, "\n"))
	var bar *progress
	if o.file != "" {
		if o.file != "-" {
			f, err := os.Open(o.file)
			if err != nil {
				return usageError(stderr, err)
			}
			defer f.Close()
			in = f
		} else {
			in = stdin
		}
		bar = newProgress(in, stdout, stderr)
	}
	code, err := runBatch(ctx, engine, base, in, out, o.concurrency, bar)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard check: %v\n", err)
		return exitUsage
	}
	return code
}

// runSelfCheck checks the relay's own outbound addresses with helo: one
// report each, exit status as for domains.
func runSelfCheck(ctx context.Context, engine *policy.Engine, helo string, out *printer, stderr io.Writer) int {
	reports := engine.SelfCheck(ctx, helo)
	if len(reports) == 0 {
		return usageError(stderr, errors.New("--self: outbound.ips holds no single address (set it, or give --outbound-ip)"))
	}
	code := exitPass
	for _, r := range reports {
		code = worse(code, out.print(engine, r))
	}
	return code
}

// engineConfig loads the configuration and applies the flags to it.
func (o *checkOptions) engineConfig() (policy.Config, netip.Addr, error) {
	c, err := loadConfig(o.configFile)
	if err != nil {
		return policy.Config{}, netip.Addr{}, err
	}
	cfg := c.Engine()
	// An audit wants every answer: probes wait for a slot as long as it takes
	// (--concurrency bounds the work instead).
	cfg.Probe.MaxQueued, cfg.Probe.QueueTimeout = math.MaxInt32, 24*time.Hour
	// Each flag takes what the key it overrides takes, through the same code.
	for _, s := range o.resolvers {
		if err := config.ParseServer(s); err != nil {
			return cfg, netip.Addr{}, fmt.Errorf("--resolver %w", err)
		}
	}
	if len(o.resolvers) > 0 {
		cfg.Resolver.Servers = o.resolvers
	}
	if o.set["probe-port"] {
		port, err := config.ParsePort(o.probePort)
		if err != nil {
			return cfg, netip.Addr{}, fmt.Errorf("--probe-port %s: %w", o.probePort, err)
		}
		cfg.Probe.Port = port
	}
	for _, s := range o.allowNets {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return cfg, netip.Addr{}, fmt.Errorf("--allow-net %w", err)
		}
		cfg.Probe.AllowNetworks = append(cfg.Probe.AllowNetworks, p)
	}
	for _, s := range o.outbound {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return cfg, netip.Addr{}, fmt.Errorf("--outbound-ip %w", err)
		}
		cfg.OutboundIPs = append(cfg.OutboundIPs, p)
	}
	var client netip.Addr
	if o.set["client-ip"] {
		ip, err := policy.ParseClientIP(o.clientIP)
		if err != nil {
			return cfg, client, fmt.Errorf("--client-ip %w", err)
		}
		client = ip
		cfg.SkipIdentityNetworks = nil // a client named on the command line is the point of the run
	}
	return cfg, client, nil
}

// runBatch checks every line of in (blank lines and # comments aside) with up
// to n workers and prints the reports in input order. A repeated domain is
// answered from the cache.
func runBatch(ctx context.Context, engine *policy.Engine, base policy.Request, in io.Reader, out *printer, n int, bar *progress) (int, error) {
	type job struct {
		req  policy.Request
		done chan *policy.Report
	}
	jobs := make(chan job)
	queue := make(chan job, n) // in input order, for the printer
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j.done <- engine.Evaluate(ctx, j.req)
			}
		}()
	}
	var readErr error
	go func() {
		defer close(queue)
		defer close(jobs)
		sc := newTargetScanner(in)
		for sc.Scan() {
			line, ok := target(sc.Text())
			if !ok {
				continue
			}
			j := job{req: subject(base, line), done: make(chan *policy.Report, 1)}
			select {
			case queue <- j:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
		readErr = sc.Err()
	}()
	worst, count := exitPass, 0
	for j := range queue {
		select {
		case r := <-j.done:
			worst = worse(worst, out.print(engine, r))
		case <-ctx.Done():
		}
		count++
		bar.done()
	}
	wg.Wait()
	bar.finish(count)
	if ctx.Err() != nil {
		return worst, ctx.Err()
	}
	return worst, readErr
}

// newTargetScanner reads the lines of a --file list: up to 1 MiB each.
func newTargetScanner(in io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 4096), 1<<20)
	return sc
}

// target is the domain or address a line of a --file list names; blank
// lines and # comments name none.
func target(line string) (string, bool) {
	line = strings.TrimSpace(line)
	return line, line != "" && !strings.HasPrefix(line, "#")
}

// subject fills in what a line names: an address (it has "@" or "<") is a
// sender, anything else a bare domain.
func subject(base policy.Request, s string) policy.Request {
	if strings.ContainsAny(s, "@<") {
		base.Sender = s
	} else {
		base.Domain = s
	}
	return base
}

// outcome is what a report comes to on the command line: the exit status
// and the headline word that goes with it. Temporary errors alone give 3
// and TEMPERROR, whatever on_temperror made of them: the checks could not
// say.
func outcome(engine *policy.Engine, r *policy.Report) (headline string, code int) {
	findings := make([]policy.Result, len(r.Checks))
	for i, c := range r.Checks {
		if c.Status == policy.StatusTempError {
			c.Status = policy.StatusSkip
		}
		findings[i] = c
	}
	p := engine.Config().Policy
	v := p.Decide(r.Domain, r.ClientIP, findings).Verdict
	switch {
	case v >= policy.Defer:
		code = exitDefer
	case v >= policy.Flag:
		code = exitFlag
	case r.Decision.TempError:
		return "TEMPERROR", exitTempError
	}
	return strings.ToUpper(v.String()), code
}

// worse returns the more severe exit code: 2 > 1 > 3 > 0.
func worse(a, b int) int {
	rank := map[int]int{exitPass: 0, exitTempError: 1, exitFlag: 2, exitDefer: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// printer writes reports as text tables or JSON lines.
type printer struct {
	w    io.Writer
	json bool
	enc  *json.Encoder
	n    int
}

func newPrinter(w io.Writer, asJSON bool) *printer {
	return &printer{w: w, json: asJSON, enc: json.NewEncoder(w)}
}

// print writes one report and returns its exit code.
func (p *printer) print(engine *policy.Engine, r *policy.Report) int {
	defer func() { p.n++ }()
	headline, code := outcome(engine, r)
	if p.json {
		p.enc.Encode(checkapi.NewReport(r))
	} else {
		if p.n > 0 {
			fmt.Fprintln(p.w)
		}
		writeHuman(p.w, r, headline)
	}
	return code
}
