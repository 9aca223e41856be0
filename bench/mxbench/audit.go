package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mxguard/mxguard/smtptest"
)

// runAudit: `mxguard audit --file` over a hosting provider's customer list,
// many domains sharing few MX addresses, behind DNS answers that take a
// round trip: domains per second, and one probe per MX address, counted at
// the sandbox.
func runAudit(fs *flag.FlagSet, args []string) ([]row, error) {
	domains := fs.Int("domains", 100000, "domains in the audit file")
	hosts := fs.Int("mx-addresses", 1000, "distinct MX addresses the domains share")
	latency := fs.Duration("dns-latency", 20*time.Millisecond, "delay of every DNS answer")
	concurrency := fs.Int("concurrency", 512, "mxguard audit --concurrency")
	parse(fs, args, "domains=200", "mx-addresses=20", "dns-latency=1ms", "concurrency=32")
	if *hosts < 1 || *hosts > 250*200 {
		return nil, fmt.Errorf("-mx-addresses %d: between 1 and 50000", *hosts)
	}

	dir, err := os.MkdirTemp("", "mxbench-audit-")
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
	const relay = "127.0.2.1" // the outbound address every domain's SPF authorizes
	for h := 0; h < *hosts; h++ {
		addr := fmt.Sprintf("127.1.%d.%d", h/250, 1+h%250)
		if _, err := sb.Serve(addr, smtptest.Accept); err != nil {
			return nil, err
		}
		sb.Zone.A(fmt.Sprintf("mx%d.hosting.test", h), addr)
	}
	var list bytes.Buffer
	for i := 0; i < *domains; i++ {
		d := fmt.Sprintf("d%d.audit.test", i)
		sb.Zone.MX(d, 10, fmt.Sprintf("mx%d.hosting.test", i%*hosts)).
			TXT(d, "v=spf1 ip4:"+relay+" -all").TXT("_dmarc."+d, "v=DMARC1; p=none")
		fmt.Fprintln(&list, d)
	}
	sb.Zone.SetLatency(*latency)
	listFile, cfgFile := filepath.Join(dir, "domains.txt"), filepath.Join(dir, "mxguard.yaml")
	if err := os.WriteFile(listFile, list.Bytes(), 0o644); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`resolver:
  servers: [%s]
probe:
  port: %d
  allow_networks: [127.0.0.0/8]
outbound:
  ips: [%s]
identity:
  skip_networks: []
inventory:
  path: %s
`, sb.DNS.Addr, sb.Port, relay, filepath.Join(dir, "inventory"))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}

	took, lines, passed, err := runReports(bin, "audit", "--config", cfgFile, "--file", listFile,
		"--concurrency", fmt.Sprint(*concurrency), "--json")
	if err != nil {
		return nil, err
	}
	rate := float64(*domains) / took.Seconds()
	probes := sb.Connections()
	return []row{
		{"audit", fmt.Sprintf("mxguard audit --file, %d domains on %d MX addresses, DNS +%v, --concurrency %d",
			*domains, *hosts, *latency, *concurrency),
			fmt.Sprintf("%.0f domains/s (%v; %d DNS queries)", rate, took.Round(time.Millisecond), sb.DNS.Queries()),
			"≥ 5000/s " + verdict(rate >= 5000), false},
		sanity("audit", "reports, and domains that pass", fmt.Sprintf("%d, %d", lines, passed),
			fmt.Sprintf("%d, %d", *domains, *domains), lines == *domains && passed == *domains),
		sanity("audit", "probes, counted at the sandbox", fmt.Sprint(probes),
			fmt.Sprintf("one per MX address (%d)", *hosts), probes == *hosts),
	}, nil
}
