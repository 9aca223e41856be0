package spectest

import (
	"strings"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// fixture is what a check's own file adds to the sandbox: its domains, its
// rows of the table, and what a mail domain publishes to pass it. A new
// check so adds one file here and changes no other check's rows.
type fixture struct {
	check   policy.CheckID
	passing func(z *smtptest.Zone, domain string)
	// alias, when set, is what passing publishes that a CNAME at the
	// domain does not carry (a record under a prefix such as _dmarc.).
	alias func(z *smtptest.Zone, domain string)
	zone  func(z *smtptest.Zone)
	cases []Case
}

var (
	fixtures []fixture
	// ownRows are the names of the rows that fixtures hold.
	ownRows = map[string]bool{}
)

func register(f fixture) {
	fixtures = append(fixtures, f)
	for _, c := range f.cases {
		ownRows[c.Name] = true
	}
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

// Shared renders, as Findings does, what a row not held by a fixture is
// about: the checks without a fixture, and those want names. A check with
// a fixture has its rows there, on domains that pass everything else.
func Shared(want string, results []policy.Result) string {
	named := findingsByID(want)
	var kept []policy.Result
	for _, r := range results {
		if _, ok := named[r.ID]; ok || !hasFixture(r.ID) {
			kept = append(kept, r)
		}
	}
	return Findings(kept)
}

func hasFixture(id policy.CheckID) bool {
	for _, f := range fixtures {
		if f.check == id {
			return true
		}
	}
	return false
}

// Got renders results the way c.Want is written, over what the row is
// about (Shared).
func (c Case) Got(results []policy.Result) string {
	if ownRows[c.Name] {
		return Findings(results)
	}
	return Shared(c.Want, results)
}
