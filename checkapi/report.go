package checkapi

import "github.com/mxguard/mxguard/policy"

// Report is the JSON form of a report (README, mxguard check): one line of
// `mxguard check --json`, and the answer of GET /v1/check.
type Report struct {
	Domain  string         `json:"domain"`
	Verdict policy.Verdict `json:"verdict"`
	// Mode is "report" under policy.mode: report (the verdict is what
	// enforcement would apply); left out otherwise.
	Mode      string          `json:"mode,omitempty"`
	Checks    []policy.Result `json:"checks"`
	ElapsedMS int64           `json:"elapsed_ms"`
}

// NewReport is the JSON form of r.
func NewReport(r *policy.Report) Report {
	j := Report{Domain: r.Domain, Verdict: r.Verdict(), Checks: r.Checks, ElapsedMS: r.Elapsed.Milliseconds()}
	if r.ReportOnly {
		j.Mode = "report"
	}
	return j
}
