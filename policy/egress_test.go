package policy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/mxguard/mxguard/smtptest"
)

// A relay without IPv6 cannot reach an IPv6-only MX: that says nothing
// about the MX, so it is inconclusive, never a failure; after a few such
// probes the relay knows that IPv6 is out of its reach and says so.
func TestUnreachableAddressFamilyIsInconclusive(t *testing.T) {
	sb := newTestSandbox(t)
	if _, err := sb.Serve("127.0.7.80", smtptest.Accept); err != nil {
		t.Fatal(err)
	}
	sb.Zone.MX("v4.test", 10, "mx.v4.test").A("mx.v4.test", "127.0.7.80")
	for _, d := range []string{"a", "b", "c", "d"} {
		sb.Zone.MX(d+".v6only.test", 10, "mx."+d+".v6only.test").A("mx."+d+".v6only.test", "2001:db8::"+d)
	}
	cfg := DefaultConfig()
	cfg.Resolver.Servers = []string{sb.DNS.Addr}
	cfg.Probe.Port = sb.Port
	cfg.Probe.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	cfg.Probe.BlockedAfter = 3
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	real := e.raw.dial
	e.raw.dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if strings.HasPrefix(address, "[") { // no route for IPv6 here
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}
		}
		return real(ctx, network, address)
	}
	for i, d := range []string{"a", "b"} { // below probe.blocked_after
		r := e.Evaluate(context.Background(), Request{Domain: d + ".v6only.test"})
		c := r.Check(MXPort25)
		if c.Status != StatusTempError || r.Verdict() >= Defer {
			t.Fatalf("probe %d: mx.port25 %s (%s), verdict %s; want temperror, no deferral", i, c.Status, c.Detail, r.Verdict())
		}
	}
	e.Evaluate(context.Background(), Request{Domain: "c.v6only.test"})
	r := e.Evaluate(context.Background(), Request{Domain: "d.v6only.test"})
	if c := r.Check(MXPort25); c.Status != StatusSkip || !strings.Contains(c.Detail, "IPv6") || r.Verdict() >= Defer {
		t.Errorf("once IPv6 is known unreachable: mx.port25 %s (%s), verdict %s", c.Status, c.Detail, r.Verdict())
	}
	// IPv4 is not tarred with the same brush.
	if r := e.Evaluate(context.Background(), Request{Domain: "v4.test"}); r.Check(MXPort25).Status != StatusPass {
		t.Errorf("IPv4 MX: %s %s", r.Check(MXPort25).Status, r.Check(MXPort25).Detail)
	}
}

func TestDialErrorsFromHereAreUnreachable(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EADDRNOTAVAIL, syscall.EAFNOSUPPORT} {
		r := classifyDialError(&net.OpError{Op: "dial", Net: "tcp", Err: errno})
		if r.Outcome != OutcomeUnreachable || r.Outcome.NoSMTP() || r.Outcome.SpeaksSMTP() {
			t.Errorf("%v: %s", errno, r.Outcome)
		}
		if strings.Contains(r.Detail, "dial") {
			t.Errorf("%v: detail shows Go internals: %q", errno, r.Detail)
		}
	}
}
