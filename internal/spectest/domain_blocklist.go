package spectest

import (
	"net/netip"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// DomainBlocklist is the sandbox's domain blocklist (checks.domain_blocklists),
// read as Spamhaus's DBL is: listings in 127.0.1.0/24, refusals in
// 127.255.255.0/24.
var DomainBlocklist = policy.BlocklistZone{
	Zone:    "dbl.bl.test",
	Listed:  []netip.Prefix{netip.MustParsePrefix("127.0.1.0/24")},
	Refused: []netip.Prefix{netip.MustParsePrefix("127.255.255.0/24")},
}

// DomainBlocklistYAML is DomainBlocklist as configuration.
const DomainBlocklistYAML = "checks:\n  domain_blocklists:\n    - {zone: dbl.bl.test, listed: [127.0.1.0/24], refused: [127.255.255.0/24]}\n"

// domain.blocklist (RFC 5782).
func init() {
	register(fixture{
		check:   policy.DomainBlocklist,
		passing: func(*smtptest.Zone, string) {}, // a domain nobody listed passes
		zone:    domainBlocklistZone,
		cases: []Case{
			{"domain on a blocklist", "a@dbl-listed.test", "127.0.3.1", "mail.good.test", "", "domain.blocklist=fail", "flag", "", "dbl-listed.test is listed in dbl.bl.test (127.0.1.2: spam domain, see https://bl.test/dbl-listed.test)"},
			{"sub-domain of a listed domain", "a@mail.dbl-listed.test", "127.0.3.1", "mail.good.test", "", "domain.blocklist=fail", "flag", "", "dbl-listed.test is listed"},
			{"blocklist refuses the query", "a@dbl-refused.test", "127.0.3.1", "mail.good.test", "", "domain.blocklist=temperror", "pass", "", "query refused (127.255.255.254)"},
			{"blocklist answers outside 127.0.0.0/8", "a@dbl-outside.test", "127.0.3.1", "mail.good.test", "", "domain.blocklist=temperror", "pass", "", "outside 127.0.0.0/8"},
			{"blocklist SERVFAIL", "a@dbl-servfail.test", "127.0.3.1", "mail.good.test", "", "domain.blocklist=temperror", "pass", "", "SERVFAIL"},
			{"blocklist answers a code that is no listing", "a@dbl-other.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
		},
	})
}

func domainBlocklistZone(z *smtptest.Zone) {
	bl := DomainBlocklist.Zone
	z.List(bl, "dbl-listed.test", "127.0.1.2", "spam domain, see https://bl.test/dbl-listed.test")
	z.List(bl, "dbl-refused.test", "127.255.255.254", "")
	z.List(bl, "dbl-outside.test", "192.0.2.1", "")
	z.List(bl, "dbl-other.test", "127.0.0.2", "")
	z.SetFault(smtptest.ListedName(bl, "dbl-servfail.test"), smtptest.ServFail)
	domains := []string{"dbl-listed.test", "mail.dbl-listed.test", "dbl-refused.test", "dbl-outside.test", "dbl-servfail.test", "dbl-other.test"}
	for _, d := range domains {
		z.MX(d, 10, "mx.accept.test")
	}
	PassingExcept(z, policy.DomainBlocklist, domains...)
}
