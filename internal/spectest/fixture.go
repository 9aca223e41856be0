package spectest

import (
	"strings"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// fixture is what a check's own file adds to the sandbox: its domains, its
// rows of the table, what a mail domain publishes to pass it, and what it
// says on the other rows' domains where that is not pass. A new check so
// adds one file here and changes no other check's rows.
type fixture struct {
	check   policy.CheckID
	passing func(z *smtptest.Zone, domain string)
	// alias, when set, is what passing publishes that a CNAME at the
	// domain does not carry (a record under a prefix such as _dmarc.).
	alias func(z *smtptest.Zone, domain string)
	zone  func(z *smtptest.Zone)
	cases []Case
	// elsewhere is the check's status on the sender domains of rows it
	// does not hold, where not pass (a domain that does not exist, one
	// whose every lookup fails).
	elsewhere map[string]policy.Status
}

var fixtures []fixture

func register(f fixture) {
	fixtures = append(fixtures, f)
	Cases = append(Cases, f.cases...)
}

// Passing gives mail domains what each check with a fixture needs to pass
// (an SPF record that authorizes the sandbox relay, a DMARC policy), for
// tests whose domains should be about their mail exchangers alone.
func Passing(z *smtptest.Zone, domains ...string) { PassingExcept(z, "", domains...) }

// PassingExcept is Passing for every check but id, for that check's own rows.
func PassingExcept(z *smtptest.Zone, id policy.CheckID, domains ...string) {
	for _, f := range fixtures {
		if f.check == id {
			continue
		}
		for _, d := range domains {
			f.passing(z, d)
		}
	}
}

// passingAlias is Passing for domains that are CNAMEs of passing ones: the
// records at the domain itself are the target's; those under it are not.
func passingAlias(z *smtptest.Zone, domains ...string) {
	for _, f := range fixtures {
		if f.alias == nil {
			continue
		}
		for _, d := range domains {
			f.alias(z, d)
		}
	}
}

// DomainSkipped is want with every domain check it does not name skipping,
// in report order: the findings for a sender with no domain to check.
func DomainSkipped(want string) string {
	given := findingsByID(want)
	var parts []string
	for _, c := range policy.Catalogue() {
		if f, ok := given[c.ID]; ok {
			parts = append(parts, f)
		} else if c.ID.AboutDomain() {
			parts = append(parts, string(c.ID)+"=skip")
		}
	}
	return strings.Join(parts, " ")
}

func findingsByID(want string) map[policy.CheckID]string {
	m := map[policy.CheckID]string{}
	for _, f := range strings.Fields(want) {
		id, _, _ := strings.Cut(f, "=")
		m[policy.CheckID(id)] = f
	}
	return m
}

// Expected is what the checks must say about the row, as Findings renders
// it: the statuses c.Want names, and for every other check with a fixture,
// what that fixture says on the row's sender domain (pass unless its
// elsewhere names it).
func (c Case) Expected() string {
	given := findingsByID(c.Want)
	sender := policy.ParseDomain(c.Sender)
	if strings.ContainsAny(c.Sender, "@<") {
		sender = policy.ParseSender(c.Sender)
	}
	var parts []string
	for _, info := range policy.Catalogue() {
		if f, ok := given[info.ID]; ok {
			parts = append(parts, f)
			continue
		}
		for _, f := range fixtures {
			if s, ok := f.elsewhere[sender.Domain]; ok && f.check == info.ID {
				parts = append(parts, string(info.ID)+"="+s.String())
			}
		}
	}
	return strings.Join(parts, " ")
}

// EveryFixture is id=status for every check with a fixture, in report
// order: these checks read what the sender domain publishes in DNS.
func EveryFixture(status policy.Status) string {
	var parts []string
	for _, info := range policy.Catalogue() {
		for _, f := range fixtures {
			if f.check == info.ID {
				parts = append(parts, string(info.ID)+"="+status.String())
			}
		}
	}
	return strings.Join(parts, " ")
}

// Merge renders, in report order, the findings of want and of more, want's
// where both name a check.
func Merge(want, more string) string {
	given, extra := findingsByID(want), findingsByID(more)
	var parts []string
	for _, info := range policy.Catalogue() {
		if f, ok := given[info.ID]; ok {
			parts = append(parts, f)
		} else if f, ok := extra[info.ID]; ok {
			parts = append(parts, f)
		}
	}
	return strings.Join(parts, " ")
}

// HasFixture reports whether id has a fixture: a check on what the sender
// domain publishes, whose passing records Passing gives.
func HasFixture(id policy.CheckID) bool {
	for _, f := range fixtures {
		if f.check == id {
			return true
		}
	}
	return false
}

// Status is what check id must say about the row (Expected).
func (c Case) Status(id policy.CheckID) policy.Status {
	if f, ok := findingsByID(c.Expected())[id]; ok {
		_, name, _ := strings.Cut(f, "=")
		var s policy.Status
		if err := s.UnmarshalText([]byte(name)); err != nil {
			panic("spectest: " + c.Name + ": " + err.Error())
		}
		return s
	}
	return policy.StatusPass
}

// CaseNamed is the row called name.
func CaseNamed(name string) Case {
	for _, c := range Cases {
		if c.Name == name {
			return c
		}
	}
	panic("spectest: no row " + name)
}
