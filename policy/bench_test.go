package policy_test

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// BenchmarkEvaluateWarm is one decision with everything cached, the same
// request again: what every message after the first from a sender and
// host costs, its report remembered (BenchmarkEvaluateFromTheCaches runs
// the checks from the caches).
func BenchmarkEvaluateWarm(b *testing.B) { evaluateWarm(b) }

// TestBenchmarkEvaluateWarm is BenchmarkEvaluateWarm's quick run.
func TestBenchmarkEvaluateWarm(t *testing.T) { evaluateWarm(t) }

func evaluateWarm(tb testing.TB) {
	sb := spectest.Sandbox(tb)
	e := newEngine(tb, spectest.Config(sb))
	req := spectest.Cases[0].Request() // a passing sender domain and sending host
	if r := e.Evaluate(context.Background(), req); r.Verdict() != policy.Pass {
		tb.Fatalf("warm-up: %s", spectest.Findings(r.Checks))
	}
	queries := sb.DNS.Queries()
	testkit.Iterate(tb, func() { e.Evaluate(context.Background(), req) })
	if sb.DNS.Queries() != queries {
		tb.Fatalf("warm evaluations made %d DNS queries", sb.DNS.Queries()-queries)
	}
}

// BenchmarkEvaluateMessage is the message checks on a signed, aligned
// message of 10 KB with everything cached: the body stage's cost per
// message in the milter, without the milter.
func BenchmarkEvaluateMessage(b *testing.B) { evaluateMessage(b, 10<<10) }

// BenchmarkEvaluateMessage1MB is BenchmarkEvaluateMessage for 1 MB.
func BenchmarkEvaluateMessage1MB(b *testing.B) { evaluateMessage(b, 1<<20) }

// TestBenchmarkEvaluateMessage is BenchmarkEvaluateMessage's quick run.
func TestBenchmarkEvaluateMessage(t *testing.T) { evaluateMessage(t, 10<<10) }

func evaluateMessage(tb testing.TB, size int) {
	sb := spectest.Sandbox(tb)
	e := newEngine(tb, spectest.Config(sb))
	signer, err := smtptest.NewDKIMSigner("bench.test", "s1", 2048)
	if err != nil {
		tb.Fatal(err)
	}
	sb.Zone.DKIMKey(signer).MX("bench.test", 10, "mx.accept.test")
	spectest.Passing(sb.Zone, "bench.test")
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
	msg, err := signer.Sign("From: <a@bench.test>\r\nTo: <b@example.net>\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, size/len(line)))
	if err != nil {
		tb.Fatal(err)
	}
	req := policy.Request{Sender: "a@bench.test", ClientIP: netip.MustParseAddr("127.0.3.1"), HELO: "mail.good.test"}
	envelope := e.Evaluate(context.Background(), req)
	judge := func() *policy.Report {
		m := e.NewMessage()
		for rest := msg; rest != ""; { // as the milter gets it: 64 KiB chunks
			n := min(len(rest), 65535)
			io.WriteString(m, rest[:n])
			rest = rest[n:]
		}
		return e.EvaluateMessage(context.Background(), envelope, req, m)
	}
	if r := judge(); r.Verdict() != policy.Pass {
		tb.Fatalf("warm-up: %s", r.Findings())
	}
	queries := sb.DNS.Queries()
	testkit.Iterate(tb, func() { judge() })
	if sb.DNS.Queries() != queries {
		tb.Fatalf("warm message decisions made %d DNS queries", sb.DNS.Queries()-queries)
	}
}
