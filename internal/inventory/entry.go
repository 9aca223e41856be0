// Package inventory remembers every sender and author domain mxguard
// decides: first and last seen, a message count, its current verdict and
// findings, since when it has been failing, and its last verdict changes.
// It is what a hosting provider audits and its support desk reads
// (README "Domain inventory and audit"). It is never on the mail path:
// decisions are queued, dropped under pressure, and written in batches, to
// a file on this host or, for a fleet, to Redis or Valkey.
package inventory

import (
	"slices"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// Finding is a check that did not pass.
type Finding struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Change is a change of a domain's verdict.
type Change struct {
	At       time.Time
	From     string // "" for the first verdict
	To       string
	Findings []Finding
}

// Entry is what the inventory knows of one domain (stored as wire.go says).
type Entry struct {
	Domain    string
	Verdict   string // "" until one is known
	Findings  []Finding
	FirstSeen time.Time
	LastSeen  time.Time
	Messages  uint64
	// FailingSince is when the current run of failing verdicts began;
	// zero while the domain passes.
	FailingSince time.Time
	// Changed is when the verdict last changed: lists are newest change
	// first.
	Changed time.Time
	// Changes are the last verdict changes, newest first.
	Changes []Change
	// AuditedAt and AuditVerdict are the last audit's, what the next
	// audit's change is relative to.
	AuditedAt    time.Time
	AuditVerdict string
}

// Failing reports whether a verdict is one a customer must act on:
// anything but pass.
func Failing(verdict string) bool { return verdict != "" && verdict != policy.Pass.String() }

// Failing reports whether the domain's current verdict is failing.
func (e *Entry) Failing() bool { return Failing(e.Verdict) }

// Sighting is one decision about a domain: a message (Messages 1) or an
// audit (Messages 0, Audit set).
type Sighting struct {
	Domain   string    `json:"d"`
	At       time.Time `json:"at"`
	Messages uint64    `json:"n,omitempty"`
	// Verdict is empty when the decision was not complete (failed open):
	// the domain was seen, nothing is known of it.
	Verdict  string    `json:"v,omitempty"`
	Findings []Finding `json:"f,omitempty"`
	Audit    bool      `json:"a,omitempty"`
}

// changesKept bounds each domain's history.
const changesKept = 10

// FromReport is the sighting of a decision. The null sender and decisions
// with no domain are not inventoried.
func FromReport(r *policy.Report, at time.Time) (Sighting, bool) {
	if r == nil || r.Null || r.Domain == "" {
		return Sighting{}, false
	}
	s := Sighting{Domain: r.Domain, At: at, Messages: 1}
	if r.Incomplete {
		return s, true
	}
	s.Verdict = r.Verdict().String()
	for _, c := range r.Checks {
		if c.ID.AboutDomain() && c.Finding() {
			s.Findings = append(s.Findings, Finding{ID: string(c.ID), Status: c.Status.String(), Detail: c.Detail, Fix: c.Fix()})
		}
	}
	return s, true
}

// apply records s in e (nil: a domain not seen before) and returns the new
// entry and the change it made to the verdict, if any. It is the one
// definition of how the inventory evolves, for every store.
func apply(e *Entry, s Sighting) (*Entry, *Change) {
	s.At = s.At.Truncate(time.Millisecond).UTC() // what every store keeps
	if e == nil {
		e = &Entry{Domain: s.Domain, FirstSeen: s.At}
	} else {
		c := *e
		e = &c
	}
	e.Messages += s.Messages
	if s.Messages > 0 && s.At.After(e.LastSeen) {
		e.LastSeen = s.At
	}
	if s.At.Before(e.FirstSeen) { // batches from a fleet arrive out of order
		e.FirstSeen = s.At
	}
	if s.Audit {
		e.AuditedAt, e.AuditVerdict = s.At, s.Verdict
	}
	if s.Verdict == "" || s.At.Before(e.Changed) {
		return e, nil // nothing known, or older than what is known
	}
	e.Findings = s.Findings
	if s.Verdict == e.Verdict {
		return e, nil
	}
	ch := Change{At: s.At, From: e.Verdict, To: s.Verdict, Findings: s.Findings}
	// The history keeps which checks failed, not their texts: they are in
	// the current findings, and a history of ten would hold them ten times.
	kept := Change{At: ch.At, From: ch.From, To: ch.To}
	for _, f := range ch.Findings {
		kept.Findings = append(kept.Findings, Finding{ID: f.ID, Status: f.Status})
	}
	switch {
	case !Failing(s.Verdict):
		e.FailingSince = time.Time{}
	case !e.Failing():
		e.FailingSince = s.At
	}
	e.Verdict, e.Changed = s.Verdict, s.At
	e.Changes = append([]Change{kept}, e.Changes[:min(len(e.Changes), changesKept-1)]...)
	return e, &ch
}

// Notice is a verdict change to tell someone about.
type Notice struct {
	Domain string
	Change Change
}

// AuditChange is what an audit found changed since the last one: new,
// newly-failing, fixed, still-failing or unchanged.
func AuditChange(before *Entry, verdict string) string {
	switch {
	case before == nil || before.AuditedAt.IsZero():
		return "new"
	case Failing(verdict) && !Failing(before.AuditVerdict):
		return "newly-failing"
	case !Failing(verdict) && Failing(before.AuditVerdict):
		return "fixed"
	case Failing(verdict):
		return "still-failing"
	}
	return "unchanged"
}

// Query selects entries: by current verdict, by a check among the
// findings, Limit at a time (newest change first), from Cursor on.
type Query struct {
	Verdict string
	Check   string
	Limit   int
	Cursor  string
}

func (q Query) matches(e *Entry) bool {
	if q.Verdict != "" && e.Verdict != q.Verdict {
		return false
	}
	return q.Check == "" || slices.ContainsFunc(e.Findings, func(f Finding) bool { return f.ID == q.Check })
}
