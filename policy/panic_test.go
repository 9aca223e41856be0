package policy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// A bug in one check must not end the process: the evaluation reports the
// unfinished checks as temperror and comes back incomplete (the milter then
// fails open).
func TestPanicInACheckIsContained(t *testing.T) {
	e, err := New(Config{Resolver: ResolverConfig{Servers: []string{"127.0.0.1:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	buggy := *e.checks[1]
	e.checks = slices.Clone(e.checks)
	e.checks[1] = &buggy
	buggy.run = func(ctx context.Context, ev *evaluation) Result {
		fanOut(ctx, 2, false, func(i int) { // from a fact's own goroutine, too
			if i == 1 {
				panic("simulated bug")
			}
		})
		return Result{}
	}
	r := e.Evaluate(context.Background(), Request{Domain: "example.com"})
	if !r.Incomplete {
		t.Fatal("a panicking evaluation came back complete")
	}
	if c := r.Check(MXRecords); c.Status != StatusTempError || !strings.Contains(c.Detail, "internal error: simulated bug") {
		t.Errorf("mx.records: %s %q", c.Status, c.Detail)
	}
	if c := r.Check(DomainSyntax); c.Status != StatusPass {
		t.Errorf("domain.syntax, done before the panic: %s", c.Status)
	}
	if c := r.Check(HELOSyntax); c.Status != StatusSkip {
		t.Errorf("the other chain: %s %q", c.Status, c.Detail)
	}
}

func TestPanicInAFlightIsContained(t *testing.T) {
	if _, err := safeLookup(context.Background(), panickingResolver{}, "x.test", 1); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("lookup: %v", err)
	}
	if r := safeProbe(context.Background(), panickingResolver{}, netip.Addr{}); r.Outcome != OutcomeAbandoned {
		t.Errorf("probe: %s", r.Outcome)
	}
}

type panickingResolver struct{}

func (panickingResolver) Lookup(context.Context, string, uint16) (*dnsAnswer, error) {
	panic("lookup bug")
}
func (panickingResolver) Probe(context.Context, netip.Addr) probeResult { panic("probe bug") }
