package policy_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// The engine in three steps: New with a configuration, Evaluate a request,
// read the Report. The sandbox stands in for the Internet: a DNS zone and
// an MX host that accepts mail, on loopback.
func Example() {
	sb, _ := smtptest.NewSandbox()
	defer sb.Close()
	sb.Serve("127.0.0.25", smtptest.Accept)
	sb.Zone.MX("example.test", 10, "mx.example.test").A("mx.example.test", "127.0.0.25")
	spectest.Passing(sb.Zone, "example.test") // what a well-kept domain publishes: SPF, DMARC

	cfg := policy.DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Probe.Port = sb.Port // port 25 in production
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	engine, err := policy.New(cfg)
	if err != nil {
		panic(err)
	}

	report := engine.Evaluate(context.Background(), policy.Request{Sender: "someone@example.test"})
	fmt.Println(report.Verdict())
	fmt.Println(report.Check(policy.MXPort25).Status)
	fmt.Println(report.HeaderValue())
	// Output:
	// pass
	// pass
	// pass; domain=example.test
}
