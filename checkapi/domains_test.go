package checkapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/inventory"
)

func inventoryOf(t *testing.T, n int) inventory.Store {
	t.Helper()
	st, err := inventory.OpenLocal("", 10000, 1<<30, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var batch []inventory.Sighting
	for i := range n {
		s := inventory.Sighting{Domain: fmt.Sprintf("d%03d.test", i), At: at.Add(time.Duration(i) * time.Second), Messages: 1, Verdict: "pass"}
		if i%3 == 0 {
			s.Verdict = "defer"
			s.Findings = []inventory.Finding{{ID: "mx.port25", Status: "fail", Detail: "no MX host accepts SMTP", Fix: "make one accept port 25"}}
		}
		batch = append(batch, s)
	}
	if _, err := st.Apply(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	st.Apply(context.Background(), []inventory.Sighting{{Domain: "d000.test", At: at.Add(time.Hour), Messages: 1, Verdict: "pass"}})
	return st
}

func TestDomainsList(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Inventory: inventoryOf(t, 30)}, Options{})
	page := func(query string) DomainPage {
		t.Helper()
		a := get(t, base+"/v1/domains"+query, "")
		if a.code != 200 {
			t.Fatalf("%s: %d %s", query, a.code, a.body)
		}
		var p DomainPage
		if err := json.Unmarshal([]byte(a.body), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	all := page("")
	if len(all.Domains) != 30 || all.Cursor != "" || all.Domains[0].Domain != "d000.test" {
		t.Fatalf("%d domains, cursor %q, first %+v: want 30, none, the newest change first", len(all.Domains), all.Cursor, all.Domains[0])
	}
	failing := page("?verdict=defer")
	if len(failing.Domains) != 9 || failing.Domains[0].FailingSince == "" || failing.Domains[0].Findings[0].ID != "mx.port25" {
		t.Errorf("failing: %+v", failing)
	}
	if byCheck := page("?check=mx.port25&limit=4"); len(byCheck.Domains) != 4 || byCheck.Cursor == "" {
		t.Errorf("by check: %+v", byCheck)
	} else {
		rest := page("?check=mx.port25&limit=4&cursor=" + url.QueryEscape(byCheck.Cursor))
		if len(rest.Domains) != 4 || rest.Domains[0].Domain == byCheck.Domains[3].Domain {
			t.Errorf("the second page: %+v", rest)
		}
	}
	if d := all.Domains[0]; d.FailingSince != "" || d.Messages != 2 || d.FirstSeen == "" {
		t.Errorf("a fixed domain: %+v", d)
	}
	for _, q := range []string{"?verdict=bad", "?check=mx.port26", "?limit=0", "?limit=5000", "?cursor=forged", "?x=1", "?limit=1&limit=2"} {
		if a := get(t, base+"/v1/domains"+q, ""); a.code != 400 {
			t.Errorf("%s: %d, want 400", q, a.code)
		} else {
			errorOf(t, a)
		}
	}
}

func TestOneDomain(t *testing.T) {
	engine := &fakeEngine{}
	_, base := startAPI(t, &Config{Engine: engine, Inventory: inventoryOf(t, 3)}, Options{})
	a := get(t, base+"/v1/domains/D000.test", "")
	var d struct {
		Domain
		Report  struct{ Domain string }
		Changes []Change
	}
	if err := json.Unmarshal([]byte(a.body), &d); err != nil || a.code != 200 {
		t.Fatalf("%d %s %v", a.code, a.body, err)
	}
	if d.Domain.Domain != "d000.test" || d.Report.Domain != "d000.test" || len(d.Changes) != 2 || d.Changes[0].To != "pass" || d.Changes[1].To != "defer" {
		t.Errorf("%+v", d)
	}
	if a := get(t, base+"/v1/domains/never.test", ""); a.code != 404 || !strings.Contains(errorOf(t, a), "never seen") {
		t.Errorf("a domain never seen: %d %s", a.code, a.body)
	}
	for _, bad := range []string{"%3Cscript%3Ealert(1)%3C%2Fscript%3E", strings.Repeat("a", 300), "x%00y"} {
		if a := get(t, base+"/v1/domains/"+bad, ""); a.code != 400 || strings.Contains(a.body, "<script>") {
			t.Errorf("%s: %d %s", bad, a.code, a.body)
		}
	}
	if a := get(t, base+"/v1/domains/d000.test?x=1", ""); a.code != 400 {
		t.Errorf("with a parameter: %d", a.code)
	}
}

func TestNoInventory(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}}, Options{})
	if a := get(t, base+"/v1/domains", ""); a.code != 503 {
		t.Errorf("%d", a.code)
	}
}
