package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
)

// The operator material in contrib/: a Grafana dashboard and Prometheus
// alerting rules. These tests hold them to what mxguard exports, so that a
// renamed metric or label breaks the build, not an operator's alerting.

const (
	contribDashboard = "../../contrib/grafana/mxguard.json"
	contribRules     = "../../contrib/prometheus/mxguard-rules.yml"
	contribRuleTests = "../../contrib/prometheus/mxguard-rules.test.yml"
)

// Prometheus's own series that contrib may use.
var prometheusOwn = []string{"up"}

type dashboard struct {
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *dashDS         `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type dashPanel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *dashDS     `json:"datasource"`
	Targets    []dashQuery `json:"targets"`
	Panels     []dashPanel `json:"panels"` // a collapsed row's
}

type dashDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashQuery struct {
	RefID      string  `json:"refId"`
	Expr       string  `json:"expr"`
	Datasource *dashDS `json:"datasource"`
}

func loadDashboard(t *testing.T) (dashboard, []dashPanel) {
	t.Helper()
	b, err := os.ReadFile(contribDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", contribDashboard, err)
	}
	var panels []dashPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	return d, panels
}

// dashboardExprs returns every query of the dashboard, by "panel/refId".
func dashboardExprs(t *testing.T) map[string]string {
	_, panels := loadDashboard(t)
	exprs := map[string]string{}
	for _, p := range panels {
		for _, q := range p.Targets {
			exprs[fmt.Sprintf("panel %d %q/%s", p.ID, p.Title, q.RefID)] = q.Expr
		}
	}
	return exprs
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(contribRules)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", contribRules, err)
	}
	return f
}

// ruleExprs returns every expression of the rules, by alert name.
func ruleExprs(t *testing.T) map[string]string {
	exprs := map[string]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	return exprs
}

// The dashboard imports into Grafana: every panel asks the datasource
// variable, every query is filtered by the job and instance variables.
func TestContribDashboardShape(t *testing.T) {
	d, panels := loadDashboard(t)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${DS_PROMETHEUS}") {
			t.Errorf("variable %s does not query ${DS_PROMETHEUS}", v.Name)
		}
	}
	if vars["DS_PROMETHEUS"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("template variables %v; want DS_PROMETHEUS (datasource), job and instance (query)", vars)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			if q.Expr == "" || q.RefID == "" || q.Datasource == nil || q.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: query %+v lacks an expression, refId or datasource", p.Title, q)
			}
			for _, sel := range selectorRE.FindAllStringSubmatch(q.Expr, -1) {
				if !strings.Contains(sel[2], `job=~"$job"`) || !strings.Contains(sel[2], `instance=~"$instance"`) {
					t.Errorf("panel %q: %s{%s} ignores $job or $instance", p.Title, sel[1], sel[2])
				}
			}
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
}

// Every alert says how bad it is and what to do.
func TestContribRulesAnnotated(t *testing.T) {
	severities := []string{"critical", "warning", "info"}
	n := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is not an alert: %s", g.Name, r.Expr)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want one of %v", r.Alert, r.Labels["severity"], severities)
			}
			if r.Annotations["summary"] == "" || len(r.Annotations["description"]) < 80 {
				t.Errorf("%s: no summary, or no description worth the name", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}
}

var (
	// metricRE finds mxguard's metric names anywhere, prose included.
	metricRE = regexp.MustCompile(`\bmxguard_[a-zA-Z0-9_]*`)
	// selectorRE finds vector selectors with matchers: name{...}.
	selectorRE = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	// groupingRE finds by (...) and without (...) label lists.
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^()]*)\)`)
	sampleRE   = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)
	labelRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// exposition is what one scrape of /metrics holds.
type exposition struct {
	types  map[string]string                     // family -> counter, gauge, histogram...
	labels map[string]map[string]map[string]bool // family -> label -> values
}

func parseExposition(text string) exposition {
	e := exposition{types: map[string]string{}, labels: map[string]map[string]map[string]bool{}}
	var samples []string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			e.types[f[2]] = f[3]
		} else if line != "" && !strings.HasPrefix(line, "#") {
			samples = append(samples, line)
		}
	}
	for _, s := range samples {
		m := sampleRE.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		fam, ok := e.family(m[1])
		if !ok {
			continue
		}
		if e.labels[fam] == nil {
			e.labels[fam] = map[string]map[string]bool{}
		}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			if e.labels[fam][l[1]] == nil {
				e.labels[fam][l[1]] = map[string]bool{}
			}
			e.labels[fam][l[1]][l[2]] = true
		}
	}
	return e
}

// family maps a series name to its family: itself, or a histogram's or
// summary's name for its _bucket, _sum and _count series.
func (e exposition) family(name string) (string, bool) {
	if _, ok := e.types[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch e.types[base] {
		case "histogram":
			return base, true
		case "summary":
			return base, suffix != "_bucket"
		}
	}
	return "", false
}

// Every metric, label and label value that the dashboard and the rules
// name is exported by a freshly started mxguard with a fleet cache, the
// check API and a self-check, before any mail: alerts and panels are never blind to a
// series that only appears later, or to a misspelt one.
func TestContribMetricsExported(t *testing.T) {
	srv := redislab.Start(t)
	sb := spectest.Sandbox(t)
	milter, metricsPort := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), freeTCPPort(t)
	cfg := sandboxConfig(sb, "inet:"+milter, metricsPort, fmt.Sprintf("cache:\n  shared:\n    url: %s\napi:\n  listen: 127.0.0.1:%d\n"+
		"notify:\n  webhook:\n    url: http://127.0.0.1:%d/\n    allow_private: true\n", srv.URL, freeTCPPort(t), freeTCPPort(t)))
	cfg = strings.Replace(cfg, "probe:\n", "probe:\n  blocked_after: 1\n", 1)
	path := filepath.Join(t.TempDir(), "mxguard.yaml")
	writeFile(t, path, cfg)
	// Every front end is up (and has registered its metrics) once it says so.
	startDaemon(t, path, "tcp", milter).waitLog(t, "mxguard serving")
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	var body string
	testkit.WaitFor(t, "the shared cache and the self-check in /metrics", func() bool {
		_, body = httpGet(t, metricsURL)
		return strings.Contains(body, "mxguard_shared_cache_up 1") && strings.Contains(body, "mxguard_self_check{")
	})
	exp := parseExposition(body)

	sources := map[string]map[string]string{contribDashboard: dashboardExprs(t), contribRules: ruleExprs(t)}
	for file, exprs := range sources {
		// Names first, in the whole file: descriptions name metrics too.
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricRE.FindAllString(string(text), -1) {
			if _, ok := exp.family(name); !ok {
				t.Errorf("%s: %s is not exported", file, name)
			}
		}
		for where, expr := range exprs {
			checkExpr(t, exp, file+": "+where, expr)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}

	// The egress gauge follows the probes: blocked after probe.blocked_after
	// (here 1) connect timeouts, open again after an answer.
	egress := func(v4, v6 int) func() bool {
		return func() bool {
			_, m := httpGet(t, metricsURL)
			return strings.Contains(m, fmt.Sprintf("mxguard_egress_blocked{family=\"ipv4\"} %d\n", v4)) &&
				strings.Contains(m, fmt.Sprintf("mxguard_egress_blocked{family=\"ipv6\"} %d\n", v6))
		}
	}
	if !egress(0, 0)() {
		t.Errorf("egress blocked before any probe")
	}
	header(t, "tcp", milter, "a@blackhole.test")
	testkit.WaitFor(t, "IPv4 egress to be blocked", egress(1, 0))
	header(t, "tcp", milter, "a@v4.test")
	testkit.WaitFor(t, "IPv4 egress to be open again", egress(0, 0))
}

// checkExpr checks the selectors and groupings of one PromQL expression
// against a scrape.
func checkExpr(t *testing.T, exp exposition, where, expr string) {
	t.Helper()
	known := map[string]bool{"job": true, "instance": true} // added by Prometheus
	for _, name := range metricRE.FindAllString(expr, -1) {
		if fam, ok := exp.family(name); ok {
			for l := range exp.labels[fam] {
				known[l] = true
			}
		}
	}
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name := sel[1]
		fam, ok := exp.family(name)
		if !ok {
			if !slices.Contains(prometheusOwn, name) {
				t.Errorf("%s: selector %s{...} of a metric neither mxguard's nor Prometheus's", where, name)
			}
			continue
		}
		for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			label, op, value := m[1], m[2], m[3]
			if label == "job" || label == "instance" {
				continue
			}
			values, ok := exp.labels[fam][label]
			switch {
			case !ok:
				t.Errorf("%s: %s has no label %s", where, name, label)
			case (op == "=" || op == "!=") && !strings.Contains(value, "$") && !values[value]:
				t.Errorf("%s: %s has no series with %s=%q (it has %v)", where, name, label, value, slices.Sorted(mapKeys(values)))
			}
		}
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !known[l] {
				t.Errorf("%s: grouping by %s, a label none of its metrics has", where, l)
			}
		}
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// requirePromtool fails under CI, and skips elsewhere, without promtool.
func requirePromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool is not installed (apt-get install prometheus); CI must provide it (.ci/run)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	return p
}

func promtool(t *testing.T, bin, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// promtool accepts the rules and their unit tests pass (the alerts fire on
// synthetic series, and only when they should); the dashboard's queries
// parse as PromQL once Grafana's variables are filled in.
func TestContribPromtool(t *testing.T) {
	bin := requirePromtool(t)
	promtool(t, bin, ".", "check", "rules", contribRules)
	promtool(t, bin, filepath.Dir(contribRuleTests), "test", "rules", filepath.Base(contribRuleTests))

	fill := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$job", ".*", "$instance", ".*")
	exprs := dashboardExprs(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, where := range slices.Sorted(mapKeys(exprs)) {
		q, _ := json.Marshal(fill.Replace(exprs[where])) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: dashboard:query_%d # %s\n        expr: %s\n", i, strings.ReplaceAll(where, "\n", " "), q)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	writeFile(t, path, b.String())
	promtool(t, bin, ".", "check", "rules", path)
}
