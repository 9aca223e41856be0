package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mxguard/mxguard/checkapi"
	"github.com/mxguard/mxguard/internal/inventory"
	"github.com/mxguard/mxguard/policy"
)

const (
	domainPrefix = "/domain/"
	maxQuery     = 2048
	pageSize     = 50
	// searchScan bounds the domains a search looks through, newest change
	// first: a support desk looks for a customer who just called.
	searchScan = 5000
)

// page is one signed-in request.
type page struct {
	r    *http.Request
	cfg  *Config
	api  checkapi.ConsoleAPI
	sess *session
}

// base is what every signed-in page shows.
type base struct {
	CSRF  string
	Title string
}

type loginView struct{ Error string }

type errorView struct {
	CSRF    string
	Code    int
	Message string
}

type checkCount struct {
	ID    string
	Count int
}

type overviewView struct {
	base
	NoInventory bool
	Counts      map[string]int
	Failing     int
	ByCheck     []checkCount
	Checks      []string
	Verdicts    []string
	Check       string
	Verdict     string
	Search      string
	Domains     []*inventory.Entry
	Next        string // the next page's query, "" after the last
	Error       string
}

type finding struct {
	policy.Result
	Fix string
}

type domainView struct {
	base
	Domain  string
	Entry   *inventory.Entry // nil: never seen in mail
	Report  *policy.Report
	Results []finding
	Reply   string // the MTA's reply, or the header it adds
	Busy    string
	Form    bool // the "check any domain" form is shown above
}

var verdicts = []string{"pass", "flag", "hold", "defer", "reject"}

// queryValues parses the query of a console page: only names in allowed,
// each at most once.
func queryValues(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errors.New("The address is malformed.")
	}
	for k, v := range q {
		if !slices.Contains(allowed, k) || len(v) > 1 {
			return nil, errors.New("The address has a parameter this page does not take.")
		}
	}
	return q, nil
}

func checkIDs() []string {
	var ids []string
	for _, c := range policy.Catalogue() {
		ids = append(ids, string(c.ID))
	}
	return ids
}

// overview lists the inventory newest change first, filtered by check,
// verdict or a part of the domain name.
func (c *Console) overview(w http.ResponseWriter, p page) int {
	v := overviewView{base: base{CSRF: p.sess.csrf, Title: "Customer domains"}, Checks: checkIDs(), Verdicts: verdicts}
	q, err := queryValues(p.r, "check", "verdict", "q", "cursor")
	if err != nil {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, err.Error())
	}
	v.Check, v.Verdict, v.Search = q.Get("check"), q.Get("verdict"), strings.TrimSpace(strings.ToLower(q.Get("q")))
	if v.Check != "" && !policy.CheckID(v.Check).Known() {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, "There is no such check.")
	}
	if v.Verdict != "" && !slices.Contains(verdicts, v.Verdict) {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, "There is no such verdict.")
	}
	inv := p.cfg.Inventory
	if inv == nil {
		v.NoInventory = true
		return c.render(w, http.StatusOK, "overview", v)
	}
	ctx := p.r.Context()
	if v.Search != "" {
		if d, err := policy.NormalizeDomain(v.Search); err == nil {
			if e, err := inv.Get(ctx, d); err == nil && e != nil {
				http.Redirect(w, p.r, domainPrefix+url.PathEscape(d), http.StatusSeeOther)
				return http.StatusSeeOther
			}
		}
	}
	counts, err := inv.Counts(ctx)
	byCheck, err2 := inv.CheckCounts(ctx, v.Checks)
	if err = errors.Join(err, err2); err != nil {
		c.opts.Log.Warn("console: the inventory did not answer", "error", err)
		v.Error = "The inventory did not answer; try again."
		return c.render(w, http.StatusServiceUnavailable, "overview", v)
	}
	v.Counts = counts
	for _, verdict := range verdicts[1:] {
		v.Failing += counts[verdict]
	}
	for _, id := range v.Checks {
		if n := byCheck[id]; n > 0 {
			v.ByCheck = append(v.ByCheck, checkCount{id, n})
		}
	}
	query := inventory.Query{Verdict: v.Verdict, Check: v.Check, Limit: pageSize, Cursor: q.Get("cursor")}
	next := ""
	if v.Search == "" {
		v.Domains, next, err = inv.List(ctx, query)
	} else {
		v.Domains, next, err = search(p, query, v.Search)
	}
	if errors.Is(err, inventory.ErrCursor) {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, "That page does not exist; start from the overview.")
	}
	if err != nil {
		c.opts.Log.Warn("console: the inventory did not answer", "error", err)
		v.Error = "The inventory did not answer; try again."
		return c.render(w, http.StatusServiceUnavailable, "overview", v)
	}
	if next != "" {
		nq := url.Values{"cursor": {next}}
		for k, val := range map[string]string{"check": v.Check, "verdict": v.Verdict, "q": v.Search} {
			if val != "" {
				nq.Set(k, val)
			}
		}
		v.Next = "/?" + nq.Encode()
	}
	return c.render(w, http.StatusOK, "overview", v)
}

// search pages through the inventory for domains whose name contains s,
// looking at no more than searchScan of them per page shown.
func search(p page, q inventory.Query, s string) ([]*inventory.Entry, string, error) {
	var found []*inventory.Entry
	q.Limit = 500
	for scanned := 0; scanned < searchScan; scanned += q.Limit {
		entries, next, err := p.cfg.Inventory.List(p.r.Context(), q)
		if err != nil {
			return nil, "", err
		}
		for _, e := range entries {
			if strings.Contains(e.Domain, s) {
				found = append(found, e)
			}
		}
		if next == "" || len(found) >= pageSize {
			return found, next, nil
		}
		q.Cursor = next
	}
	return found, q.Cursor, nil
}

// checkAny is the "check any domain" form, and its result.
func (c *Console) checkAny(w http.ResponseWriter, p page) int {
	q, err := queryValues(p.r, "domain")
	if err != nil {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, err.Error())
	}
	v := domainView{base: base{CSRF: p.sess.csrf, Title: "Check a domain"}, Form: true}
	raw := strings.TrimSpace(q.Get("domain"))
	if raw == "" {
		return c.render(w, http.StatusOK, "domain", v)
	}
	return c.showCheck(w, p, v, raw, false)
}

// domain is a domain's page (GET), or a check of it now (POST).
func (c *Console) domain(w http.ResponseWriter, p page, escaped string) int {
	raw, err := url.PathUnescape(escaped)
	if err != nil || p.r.URL.RawQuery != "" {
		return c.fail(w, p.r, p.sess, http.StatusBadRequest, "The address is malformed.")
	}
	v := domainView{base: base{CSRF: p.sess.csrf}}
	switch p.r.Method {
	case http.MethodGet, http.MethodHead:
		return c.showCheck(w, p, v, raw, false)
	case http.MethodPost:
		return c.showCheck(w, p, v, raw, true)
	}
	w.Header().Set("Allow", "GET, POST")
	return c.fail(w, p.r, p.sess, http.StatusMethodNotAllowed, "Use the page's button.")
}

// showCheck checks raw now and renders its report, its inventory entry
// and its history. A check asked for (record) is stored in the inventory
// as an audit's result would be.
func (c *Console) showCheck(w http.ResponseWriter, p page, v domainView, raw string, record bool) int {
	domain, err := policy.NormalizeDomain(raw)
	if err != nil {
		domain = raw // domain.syntax says what is wrong with it
	}
	v.Domain = domain
	if v.Title == "" {
		v.Title = domain
	}
	ctx := p.r.Context()
	report, err := p.api.Check(ctx, policy.Request{Domain: domain})
	if err != nil {
		w.Header().Set("Retry-After", "1")
		v.Busy = "Too many checks are running; try again in a moment."
		return c.render(w, http.StatusServiceUnavailable, "domain", v)
	}
	v.Report = report
	for _, r := range report.Checks {
		v.Results = append(v.Results, finding{Result: r, Fix: r.Fix()})
	}
	if reply, ok := report.Reply(); ok {
		v.Reply = reply.String()
	} else if report.Verdict() != policy.Pass || report.Decision.TempError {
		v.Reply = "accepted, with the header: " + report.HeaderValue()
	}
	if p.cfg.Inventory != nil {
		if v.Entry, err = p.cfg.Inventory.Get(ctx, domain); err != nil {
			c.opts.Log.Warn("console: the inventory did not answer", "error", err)
		}
	}
	// Only a customer's domain goes into the inventory: one seen in mail.
	if record && v.Entry != nil && p.cfg.Record != nil {
		if s, ok := inventory.FromReport(report, time.Now()); ok {
			s.Messages, s.Audit = 0, true
			if err := p.cfg.Record(ctx, []inventory.Sighting{s}); err != nil {
				c.opts.Log.Warn("console: storing a check in the inventory failed", "domain", domain, "error", err)
			} else if e, err := p.cfg.Inventory.Get(ctx, domain); err == nil && e != nil {
				v.Entry = e
			}
		}
	}
	return c.render(w, http.StatusOK, "domain", v)
}
