package smtptest

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestBlocklistZones(t *testing.T) {
	for subject, want := range map[string]string{
		"192.0.2.1":   "1.2.0.192.bl.test",
		"2001:db8::1": "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test",
		"example.com": "example.com.bl.test",
	} {
		if got := ListedName("bl.test.", subject); got != want {
			t.Errorf("ListedName(%s) = %s, want %s", subject, got, want)
		}
	}
	sb := newSandbox(t)
	long := strings.Repeat("r", 600) // more than one TXT string holds
	sb.Zone.List("bl.test", "192.0.2.1", "127.0.0.2", long).ListEverything("all.test", "127.0.0.3")
	r := query(t, sb, "udp", "1.2.0.192.bl.test", dns.TypeA, true)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Errorf("listing: %v", r)
	}
	r = query(t, sb, "udp", "1.2.0.192.bl.test", dns.TypeTXT, true)
	if len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != long {
		t.Errorf("reason: %v", r)
	}
	if r = query(t, sb, "udp", "2.2.0.192.bl.test", dns.TypeA, true); r.Rcode != dns.RcodeNameError {
		t.Errorf("not listed: %v", r)
	}
	// The wildcard answers every name below it, by the name asked, and only
	// for its own type (NODATA for the others).
	r = query(t, sb, "udp", "anything.at.all.all.test", dns.TypeA, true)
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "anything.at.all.all.test." || r.Answer[0].(*dns.A).A.String() != "127.0.0.3" {
		t.Errorf("wildcard: %v", r)
	}
	if r = query(t, sb, "udp", "x.all.test", dns.TypeTXT, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("wildcard, another type: %v", r)
	}
}
