package checkapi

import (
	_ "embed"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/policy"
)

// openAPI describes the whole API (OpenAPI 3), served at /v1/openapi.json;
// the test suite checks every answer it gets against it.
//
//go:embed openapi.json
var openAPI []byte

// Domain is an inventory entry as GET /v1/domains lists it.
type Domain struct {
	Domain   string              `json:"domain"`
	Verdict  string              `json:"verdict"`
	Findings []inventory.Finding `json:"findings"`
	// Times are RFC 3339; FailingSince is "" while the domain passes.
	FirstSeen    string `json:"first_seen"`
	LastSeen     string `json:"last_seen"`
	Messages     uint64 `json:"messages"`
	FailingSince string `json:"failing_since"`
}

// DomainPage is the answer of GET /v1/domains.
type DomainPage struct {
	Domains []Domain `json:"domains"`
	// Cursor asks for the next page; "" after the last.
	Cursor string `json:"cursor"`
}

// DomainReport is the answer of GET /v1/domains/{domain}: the entry, a
// check of it now, and its last verdict changes, newest first.
type DomainReport struct {
	Domain
	Report  Report   `json:"report"`
	Changes []Change `json:"changes"`
}

// Change is a verdict change.
type Change struct {
	At       string              `json:"at"`
	From     string              `json:"from"`
	To       string              `json:"to"`
	Findings []inventory.Finding `json:"findings"`
}

// NewDomain is the JSON form of an entry.
func NewDomain(e *inventory.Entry) Domain {
	d := Domain{Domain: e.Domain, Verdict: e.Verdict, Findings: e.Findings, FirstSeen: stamp(e.FirstSeen),
		LastSeen: stamp(e.LastSeen), Messages: e.Messages, FailingSince: stamp(e.FailingSince)}
	if d.Findings == nil {
		d.Findings = []inventory.Finding{}
	}
	return d
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const (
	defaultPage = 100
	maxPage     = 1000
)

func (s *Server) listDomains(w http.ResponseWriter, r *http.Request, cfg *Config) int {
	if cfg.Inventory == nil {
		return fail(w, http.StatusServiceUnavailable, "this mxguard keeps no inventory")
	}
	q, err := parseDomainsQuery(r.URL.RawQuery)
	if err != nil {
		return fail(w, http.StatusBadRequest, err.Error())
	}
	entries, next, err := cfg.Inventory.List(r.Context(), q)
	if errors.Is(err, inventory.ErrCursor) {
		return fail(w, http.StatusBadRequest, "cursor: not one this API handed out")
	}
	if err != nil {
		s.opts.Log.Warn("api: the inventory did not answer", "error", err)
		w.Header().Set("Retry-After", "1")
		return fail(w, http.StatusServiceUnavailable, "the inventory did not answer; try again")
	}
	page := DomainPage{Domains: make([]Domain, 0, len(entries)), Cursor: next}
	for _, e := range entries {
		page.Domains = append(page.Domains, NewDomain(e))
	}
	return reply(w, http.StatusOK, page)
}

// parseDomainsQuery reads verdict, check, limit and cursor; anything else
// is an error, as for /v1/check.
func parseDomainsQuery(raw string) (inventory.Query, error) {
	q := inventory.Query{Limit: defaultPage}
	if len(raw) > maxQuery {
		return q, errors.New("query longer than " + strconv.Itoa(maxQuery) + " octets")
	}
	values, err := url.ParseQuery(raw)
	if err != nil {
		return q, errors.New("malformed query: " + err.Error())
	}
	for key, v := range values {
		if len(v) > 1 {
			return q, errors.New("parameter " + key + " given more than once")
		}
		switch val := v[0]; key {
		case "verdict":
			if !slices.Contains([]string{"pass", "flag", "hold", "defer", "reject"}, val) {
				return q, errors.New("verdict " + strconv.Quote(val) + ": want pass, flag, hold, defer or reject")
			}
			q.Verdict = val
		case "check":
			if !policy.CheckID(val).Known() {
				return q, errors.New("check " + strconv.Quote(val) + ": not a check ID")
			}
			q.Check = val
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxPage {
				return q, errors.New("limit: want 1 to " + strconv.Itoa(maxPage))
			}
			q.Limit = n
		case "cursor":
			q.Cursor = val
		default:
			return q, errors.New("unknown parameter " + strconv.Quote(key) + "; the parameters are verdict, check, limit, cursor")
		}
	}
	return q, nil
}

func (s *Server) oneDomain(w http.ResponseWriter, r *http.Request, cfg *Config, raw string) int {
	if cfg.Inventory == nil {
		return fail(w, http.StatusServiceUnavailable, "this mxguard keeps no inventory")
	}
	if r.URL.RawQuery != "" {
		return fail(w, http.StatusBadRequest, "GET "+domainsPath+"/DOMAIN takes no parameters")
	}
	domain, err := policy.NormalizeDomain(raw)
	if err != nil {
		return fail(w, http.StatusBadRequest, err.Error())
	}
	e, err := cfg.Inventory.Get(r.Context(), domain)
	if err != nil {
		s.opts.Log.Warn("api: the inventory did not answer", "error", err)
		w.Header().Set("Retry-After", "1")
		return fail(w, http.StatusServiceUnavailable, "the inventory did not answer; try again")
	}
	if e == nil {
		return fail(w, http.StatusNotFound, domain+" was never seen: no mail from it has been decided")
	}
	report, code := s.check(w, r, cfg, policy.Request{Domain: domain})
	if report == nil {
		return code
	}
	out := DomainReport{Domain: NewDomain(e), Report: NewReport(report), Changes: make([]Change, 0, len(e.Changes))}
	for _, c := range e.Changes {
		f := c.Findings
		if f == nil {
			f = []inventory.Finding{}
		}
		out.Changes = append(out.Changes, Change{At: stamp(c.At), From: c.From, To: c.To, Findings: f})
	}
	return reply(w, http.StatusOK, out)
}
