package spectest

import (
	"fmt"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// spf.relay (RFC 7208); the sandbox's outbound.ips are 127.0.2.1 and .2.
func init() {
	register(fixture{
		check: policy.SPFRelay,
		passing: func(z *smtptest.Zone, domain string) {
			z.TXT(domain, "v=spf1 ip4:127.0.2.0/24 -all")
		},
		zone: spfRelayZone,
		elsewhere: map[string]policy.Status{
			"nx.test":       policy.StatusWarn,      // no record: none
			"nomail.test":   policy.StatusFail,      // "v=spf1 -all"
			"servfail.test": policy.StatusTempError, // TXT SERVFAIL too
		},
		cases: []Case{
			{"SPF pass through include", "a@spf-include.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
			{"SPF pass through redirect", "a@spf-redirect.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
			{"SPF fail", "a@spf-fail.test", "127.0.3.1", "mail.good.test", "", "spf.relay=fail", "flag", "", "127.0.2.1 fail"},
			{"SPF fail for one outbound address", "a@spf-partial.test", "127.0.3.1", "mail.good.test", "", "spf.relay=fail", "flag", "", "127.0.2.2 fail"},
			{"SPF softfail", "a@spf-softfail.test", "127.0.3.1", "mail.good.test", "", "spf.relay=warn", "flag", "", "softfail"},
			{"SPF neutral", "a@spf-neutral.test", "127.0.3.1", "mail.good.test", "", "spf.relay=warn", "flag", "", "neutral"},
			{"no SPF record", "a@spf-none.test", "127.0.3.1", "mail.good.test", "", "spf.relay=warn", "flag", "", "none"},
			{"two SPF records: permerror", "a@spf-two.test", "127.0.3.1", "mail.good.test", "", "spf.relay=fail", "flag", "", "permerror"},
			{"too many SPF lookups: permerror", "a@spf-lookups.test", "127.0.3.1", "mail.good.test", "", "spf.relay=fail", "flag", "", "lookup limit"},
			{"bad SPF syntax: permerror", "a@spf-syntax.test", "127.0.3.1", "mail.good.test", "", "spf.relay=fail", "flag", "", "permerror"},
			{"SPF SERVFAIL: temperror", "a@spf-servfail.test", "127.0.3.1", "mail.good.test", "", "spf.relay=temperror", "pass", "", "temperror"},
		},
	})
}

func spfRelayZone(z *smtptest.Zone) {
	z.TXT("_spf.provider.test", "v=spf1 ip4:127.0.2.0/24 -all")
	for name, spf := range map[string]string{
		"spf-fail.test":     "v=spf1 ip4:192.0.2.1 -all",
		"spf-softfail.test": "v=spf1 ip4:192.0.2.1 ~all",
		"spf-neutral.test":  "v=spf1 ?all",
		"spf-include.test":  "v=spf1 include:_spf.provider.test -all",
		"spf-redirect.test": "v=spf1 redirect=_spf.provider.test",
		"spf-partial.test":  "v=spf1 ip4:127.0.2.1 -all", // one of the two outbound addresses
		"spf-syntax.test":   "v=spf1 ip4:not-an-address -all",
	} {
		z.MX(name, 10, "mx.accept.test").TXT(name, spf)
	}
	z.MX("spf-none.test", 10, "mx.accept.test")
	z.MX("spf-two.test", 10, "mx.accept.test").TXT("spf-two.test", "v=spf1 -all").TXT("spf-two.test", "v=spf1 +all")
	for i := 0; i < 11; i++ { // eleven includes: past the limit of 10 DNS lookups
		z.TXT(fmt.Sprintf("l%d.spf-lookups.test", i), fmt.Sprintf("v=spf1 include:l%d.spf-lookups.test -all", i+1))
	}
	z.TXT("l11.spf-lookups.test", "v=spf1 ip4:127.0.2.0/24 -all")
	z.MX("spf-lookups.test", 10, "mx.accept.test").TXT("spf-lookups.test", "v=spf1 include:l0.spf-lookups.test -all")
	z.MX("spf-servfail.test", 10, "mx.accept.test").SetTypeFault("spf-servfail.test", dns.TypeTXT, smtptest.ServFail)
	PassingExcept(z, policy.SPFRelay, "spf-fail.test", "spf-softfail.test", "spf-neutral.test", "spf-include.test", "spf-redirect.test",
		"spf-partial.test", "spf-syntax.test", "spf-none.test", "spf-two.test", "spf-lookups.test", "spf-servfail.test")
}
