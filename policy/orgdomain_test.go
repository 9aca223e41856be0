package policy

import (
	"context"
	"slices"
	"testing"

	"github.com/mxguard/mxguard/smtptest"
)

func TestWalkTargets(t *testing.T) {
	got := walkTargets("a.b.c.d.e.f.g.h.i.j")
	want := []string{"a.b.c.d.e.f.g.h.i.j", "d.e.f.g.h.i.j", "e.f.g.h.i.j", "f.g.h.i.j", "g.h.i.j", "h.i.j", "i.j", "j"}
	if !slices.Equal(got, want) {
		t.Errorf("walk of ten labels: %v, want %v", got, want)
	}
	if got := walkTargets("example.com"); !slices.Equal(got, []string{"example.com", "com"}) {
		t.Errorf("walk of example.com: %v", got)
	}
}

// The RFC 9989 DNS tree walk: policies of sub-domains, public suffix
// domains (psd=), and its bound.
func TestDMARCTreeWalk(t *testing.T) {
	z := smtptest.NewZone()
	z.TXT("_dmarc.org.test", "v=DMARC1; p=reject; sp=quarantine").
		TXT("_dmarc.psd.test", "v=DMARC1; p=reject; psd=y").
		TXT("_dmarc.brand.psd.test", "v=DMARC1; p=none").
		TXT("_dmarc.own.psd.test", "v=DMARC1; p=quarantine; psd=n").
		TXT("_dmarc.deep.own.psd.test", "v=DMARC1; p=none").
		TXT("_dmarc.j", "v=DMARC1; p=reject").
		TXT("_dmarc.no-p.test", "v=DMARC1; rua=mailto:reports@no-p.test").
		TXT("_dmarc.bad-tag.test", "v=DMARC1; p=reject; rf=bogus; sp=nonsense")
	srv, err := smtptest.StartDNS(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e := spfEngine(t, srv.Addr, rigRelay, "relay.example.test")
	cases := []struct {
		domain, name, policy, org string
		asked                     int
	}{
		{"org.test", "_dmarc.org.test", "reject", "org.test", 2},
		{"a.b.org.test", "_dmarc.org.test", "quarantine", "org.test", 4}, // sp= for a sub-domain
		{"x.brand.psd.test", "_dmarc.brand.psd.test", "none", "brand.psd.test", 0},
		{"x.psd.test", "_dmarc.psd.test", "reject", "x.psd.test", 2}, // below a public suffix: its own organization
		{"a.deep.own.psd.test", "_dmarc.deep.own.psd.test", "none", "own.psd.test", 3},
		{"a.b.c.d.e.f.g.h.i.j", "_dmarc.j", "reject", "j", 8}, // at most eight queries
		{"nothing.test", "", "", "nothing.test", 2},
		// RFC 9989 sections 4.7 and 4.8: read past what is missing or bad.
		{"no-p.test", "_dmarc.no-p.test", "none", "no-p.test", 2},
		{"mail.bad-tag.test", "_dmarc.bad-tag.test", "reject", "bad-tag.test", 3},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			ev := newEvaluation(e, Request{Domain: c.domain})
			got, err := ev.discoverDMARC(context.Background(), c.domain, true)
			if err != nil {
				t.Fatal(err)
			}
			if got.name != c.name || string(got.effectivePolicy()) != c.policy || got.org != c.org {
				t.Errorf("policy %s %q, organizational domain %s; want %s %q, %s", got.name, got.effectivePolicy(), got.org, c.name, c.policy, c.org)
			}
			if c.asked > 0 && len(got.asked) != c.asked {
				t.Errorf("asked %d names (%v), want %d", len(got.asked), got.asked, c.asked)
			}
		})
	}
}
