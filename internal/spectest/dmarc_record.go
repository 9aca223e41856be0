package spectest

import (
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// dmarc.record (RFC 7489).
func init() {
	register(fixture{
		check:   policy.DMARCRecord,
		passing: dmarcPassing,
		alias:   dmarcPassing,
		zone:    dmarcRecordZone,
		elsewhere: map[string]policy.Status{
			"nx.test":     policy.StatusWarn, // no record
			"nomail.test": policy.StatusWarn,
		},
		cases: []Case{
			{"no DMARC record", "a@dmarc-none.test", "127.0.3.1", "mail.good.test", "", "dmarc.record=warn", "flag", "", "no DMARC record"},
			{"malformed DMARC record", "a@dmarc-bad.test", "127.0.3.1", "mail.good.test", "", "dmarc.record=fail", "flag", "", "not a valid DMARC record"},
			{"two DMARC records", "a@dmarc-two.test", "127.0.3.1", "mail.good.test", "", "dmarc.record=fail", "flag", "", "2 DMARC records"},
			{"sub-domain uses the organizational domain's DMARC", "a@mail.dmarc-org.test", "127.0.3.1", "mail.good.test", "", "", "pass", "", ""},
			{"DMARC SERVFAIL: temperror", "a@dmarc-servfail.test", "127.0.3.1", "mail.good.test", "", "dmarc.record=temperror", "pass", "", "SERVFAIL"},
		},
	})
}

func dmarcPassing(z *smtptest.Zone, domain string) { z.TXT("_dmarc."+domain, "v=DMARC1; p=none") }

func dmarcRecordZone(z *smtptest.Zone) {
	z.MX("dmarc-none.test", 10, "mx.accept.test")
	z.MX("dmarc-bad.test", 10, "mx.accept.test").TXT("_dmarc.dmarc-bad.test", "v=DMARC1; p=bogus")
	z.MX("dmarc-two.test", 10, "mx.accept.test").TXT("_dmarc.dmarc-two.test", "v=DMARC1; p=none").
		TXT("_dmarc.dmarc-two.test", "v=DMARC1; p=reject")
	z.MX("dmarc-org.test", 10, "mx.accept.test").TXT("_dmarc.dmarc-org.test", "v=DMARC1; p=quarantine").
		MX("mail.dmarc-org.test", 10, "mx.accept.test").TXT("_dmarc.nothing-here.test", "not DMARC").
		TXT("_dmarc.dmarc-servfail.test", "v=DMARC1; p=none").SetFault("_dmarc.dmarc-servfail.test", smtptest.ServFail).
		MX("dmarc-servfail.test", 10, "mx.accept.test")
	PassingExcept(z, policy.DMARCRecord, "dmarc-none.test", "dmarc-bad.test", "dmarc-two.test", "dmarc-org.test", "dmarc-servfail.test",
		"mail.dmarc-org.test")
}
