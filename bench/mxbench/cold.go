package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// runCold: a domain with 5 MX hosts of which 4 never greet, and a signed
// message. Probing in parallel, a decision takes about one greeting
// timeout, not five, message checks included; and decision_timeout
// bounds it.
func runCold(fs *flag.FlagSet, args []string) ([]row, error) {
	greeting := fs.Duration("greeting-timeout", 2*time.Second, "probe.greeting_timeout")
	rounds := fs.Int("rounds", 3, "cold decisions measured (a fresh cache each)")
	parse(fs, args, "greeting-timeout=300ms", "rounds=1")
	sb, err := newBenchSandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	// Each round gets its own domain and addresses: nothing of it is cached.
	for r := 0; r < *rounds+1; r++ {
		d := fmt.Sprintf("cold%d.test", r)
		for h := 0; h < 5; h++ {
			ip := fmt.Sprintf("127.0.%d.%d", 20+r, 1+h)
			b := smtptest.Silent
			if h == 2 {
				b = smtptest.Accept // the one that works is neither first nor last
			}
			if _, err := sb.Serve(ip, b); err != nil {
				return nil, err
			}
			sb.Zone.MX(d, uint16(10*(h+1)), fmt.Sprintf("mx%d.%s", h, d)).A(fmt.Sprintf("mx%d.%s", h, d), ip)
		}
		spectest.Passing(sb.Zone, d)
	}
	// The message checks too: each round's message is signed for its
	// domain, whose key record is as uncached as the rest.
	signed := make([]string, *rounds+1)
	for r := range signed {
		d := fmt.Sprintf("cold%d.test", r)
		signer, err := smtptest.NewDKIMSigner(d, "cold", 2048)
		if err != nil {
			return nil, err
		}
		sb.Zone.DKIMKey(signer)
		if signed[r], err = signer.Sign(fmt.Sprintf("From: <a@%s>\r\nTo: <b@example.net>\r\nSubject: cold\r\n\r\nHello.\r\n", d)); err != nil {
			return nil, err
		}
	}
	cfg := sb.cfg
	cfg.Probe.GreetingTimeout = *greeting
	cfg.DomainBlocklists = []policy.BlocklistZone{spectest.DomainBlocklist} // one more cold lookup, beside the probes
	engine, err := policy.New(cfg)
	if err != nil {
		return nil, err
	}
	var ratios []float64
	var verdicts []string
	passed := 0
	request := func(r int) policy.Request {
		return policy.Request{Sender: fmt.Sprintf("a@cold%d.test", r), ClientIP: netip.MustParseAddr(benchClient), HELO: benchHELO}
	}
	// A decision: the envelope's at RCPT, then the message's at its end.
	decide := func(ctx context.Context, r int) *policy.Report {
		envelope := engine.Evaluate(ctx, request(r))
		m := engine.NewMessage()
		io.WriteString(m, signed[r])
		return engine.EvaluateMessage(ctx, envelope, request(r), m)
	}
	for r := 0; r < *rounds; r++ {
		began := time.Now()
		rep := decide(context.Background(), r)
		took := time.Since(began)
		ratios = append(ratios, took.Seconds()/greeting.Seconds())
		verdicts = append(verdicts, strings.TrimSpace(fmt.Sprintf("%s %s", rep.Verdict(), rep.Findings())))
		if verdicts[r] == "pass" {
			passed++
		}
		fmt.Fprintf(os.Stderr, "round %d: %v (%.2f × greeting timeout), %s\n", r+1, took.Round(time.Millisecond), ratios[r], verdicts[r])
	}
	// decision_timeout shorter than the greeting timeout: the deadline wins.
	deadline := *greeting / 2
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	began := time.Now()
	rep := decide(ctx, *rounds)
	bounded := time.Since(began)
	cancel()
	ratio := median(ratios)
	return []row{
		{"cold", "5 MX, 4 silent, with the message checks: decision / greeting_timeout", fmt.Sprintf("%.2f (greeting_timeout %v)", ratio, *greeting), "≤ 1.2 " + verdict(ratio <= 1.2), false},
		// One host greets: every check passes, mx.port25 too.
		sanity("cold", "cold decisions that passed", fmt.Sprintf("%d of %d (%s)", passed, *rounds, strings.Join(verdicts, ", ")), "all", passed == *rounds),
		{"cold", fmt.Sprintf("with decision_timeout %v", deadline), fmt.Sprintf("%v, incomplete=%v (fails open)", bounded.Round(time.Millisecond), rep.Incomplete),
			"≤ decision_timeout + 50ms " + verdict(bounded <= deadline+50*time.Millisecond), false},
		sanity("cold", "the decision past decision_timeout", fmt.Sprintf("incomplete=%v", rep.Incomplete), "incomplete", rep.Incomplete),
	}, nil
}

// runStampede: 500 concurrent milter transactions for one uncached domain
// make one upstream query per (name, type) and one probe per address.
func runStampede(fs *flag.FlagSet, args []string) ([]row, error) {
	n := fs.Int("transactions", 500, "concurrent transactions")
	parse(fs, args, "transactions=20")
	sb, err := newBenchSandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	var mxs []*smtptest.SMTPServer
	for h := 0; h < 2; h++ {
		srv, err := sb.Serve(fmt.Sprintf("127.0.30.%d", h+1), smtptest.SlowGreeting(100*time.Millisecond))
		if err != nil {
			return nil, err
		}
		mxs = append(mxs, srv)
		sb.Zone.MX("herd.test", uint16(10+h), fmt.Sprintf("mx%d.herd.test", h)).A(fmt.Sprintf("mx%d.herd.test", h), fmt.Sprintf("127.0.30.%d", h+1))
	}
	spectest.Passing(sb.Zone, "herd.test")
	sb.Zone.SetFault("herd.test", smtptest.Delay(50*time.Millisecond)) // a slow authority: everyone arrives while it thinks
	engine, err := policy.New(sb.cfg)
	if err != nil {
		return nil, err
	}
	m, addr, err := serveMxguard(engine, &latencies{}, nil)
	if err != nil {
		return nil, err
	}
	defer m.Shutdown(context.Background())
	sb.DNS.ResetCounts()
	conn := transaction()
	conn.Messages[0].From = "sender@herd.test"
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	start := make(chan struct{})
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := smtptest.PlayMilter("tcp", addr, conn)
			key := "error"
			if err == nil {
				key, _ = res[0].Header("X-MXGuard")
			}
			mu.Lock()
			results[key]++
			mu.Unlock()
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	// Every (name, type) the decision needs, domain and sending host.
	keys := []struct {
		name  string
		qtype uint16
	}{
		{"herd.test", dns.TypeMX}, {"herd.test", dns.TypeTXT}, {"_dmarc.herd.test", dns.TypeTXT}, {"mx0.herd.test", dns.TypeA}, {"mx0.herd.test", dns.TypeAAAA},
		{"mx1.herd.test", dns.TypeA}, {"mx1.herd.test", dns.TypeAAAA},
		{"9.9.0.127.in-addr.arpa", dns.TypePTR}, {benchHELO, dns.TypeA},
	}
	maxPerKey, sum := 0, 0
	for _, k := range keys {
		c := sb.DNS.QueryCount(k.name, k.qtype)
		maxPerKey = max(maxPerKey, c)
		sum += c
	}
	probes := mxs[0].Connections() + mxs[1].Connections()
	onceEach := mxs[0].Connections() == 1 && mxs[1].Connections() == 1
	want := fmt.Sprintf("pass; domain=herd.test; ip=%s", benchClient)
	ok := maxPerKey == 1 && sum == len(keys) && sb.DNS.Queries() == len(keys) && onceEach && results[want] == *n
	return []row{
		{"stampede", fmt.Sprintf("%d concurrent transactions, one uncached domain", *n), fmt.Sprintf("%d passed in %v", results[want], took.Round(time.Millisecond)), "", false},
		sanity("stampede", "upstream queries per (name, type) / probes per address",
			fmt.Sprintf("max %d over %d keys (%d queries in all) / %d probes for 2 addresses", maxPerKey, len(keys), sb.DNS.Queries(), probes), "1 / 1", ok),
	}, nil
}
