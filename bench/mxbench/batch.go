package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/smtptest"
)

// runBatch: `mxguard check --file` over many sandbox domains, as a hosting
// provider audits its customers: domains per second, and the cap on
// concurrent probes holding, counted at the sandbox.
func runBatch(fs *flag.FlagSet, args []string) ([]row, error) {
	domains := fs.Int("domains", 10000, "domains in the audit file")
	concurrency := fs.Int("concurrency", 256, "mxguard check --concurrency")
	probeCap := fs.Int("probe-concurrency", 64, "probe.concurrency")
	hosts := fs.Int("mx-hosts", 500, "distinct MX addresses (slow-greeting servers) the domains share")
	parse(fs, args, "domains=100", "concurrency=16", "probe-concurrency=4", "mx-hosts=10")

	dir, err := os.MkdirTemp("", "mxbench-batch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin, err := buildMxguard(dir)
	if err != nil {
		return nil, err
	}
	sb, err := smtptest.NewSandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	for h := 0; h < *hosts; h++ {
		// A greeting that takes a while keeps probes overlapping: the cap has work to do.
		if _, err := sb.Serve(fmt.Sprintf("127.0.%d.%d", 50+h/250, 1+h%250), smtptest.SlowGreeting(50*time.Millisecond)); err != nil {
			return nil, err
		}
	}
	var list bytes.Buffer
	for i := 0; i < *domains; i++ {
		d := fmt.Sprintf("d%d.batch.test", i)
		h := i % *hosts
		sb.Zone.MX(d, 10, "mx."+d).A("mx."+d, fmt.Sprintf("127.0.%d.%d", 50+h/250, 1+h%250))
		spectest.Passing(sb.Zone, d)
		fmt.Fprintln(&list, "postmaster@"+d)
	}
	listFile, cfgFile := filepath.Join(dir, "domains.txt"), filepath.Join(dir, "mxguard.yaml")
	os.WriteFile(listFile, list.Bytes(), 0o644)
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("probe:\n  concurrency: %d\n  connect_timeout: 2s\n  greeting_timeout: 5s\noutbound:\n  ips: [%s]\n", *probeCap, spectest.IPOutDual)), 0o644)

	took, lines, passed, err := runReports(bin, "check", "--config", cfgFile, "--resolver", sb.DNS.Addr,
		"--probe-port", fmt.Sprint(sb.Port), "--allow-net", "127.0.0.0/8",
		"--concurrency", fmt.Sprint(*concurrency), "--json", "--file", listFile)
	if err != nil {
		return nil, err
	}
	peak := sb.PeakConnections()
	return []row{
		{"batch", fmt.Sprintf("mxguard check --file, %d domains, --concurrency %d", *domains, *concurrency),
			fmt.Sprintf("%.0f domains/s (%v; %d reports, %d pass)", float64(*domains)/took.Seconds(), took.Round(time.Millisecond), lines, passed),
			"", false},
		sanity("batch", "reports / passing domains", fmt.Sprintf("%d / %d", lines, passed), fmt.Sprintf("%d / %d", *domains, *domains), lines == *domains && passed == *domains),
		sanity("batch", fmt.Sprintf("probes at once, counted at the sandbox (%d probes)", sb.Connections()),
			fmt.Sprintf("peak %d", peak), fmt.Sprintf("≤ probe.concurrency %d", *probeCap), peak <= *probeCap),
	}, nil
}
