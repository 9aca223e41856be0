package inventory

import (
	"encoding/json"
	"time"
)

// An entry is stored (in the file and in Redis) in a compact form: short
// names and times as Unix milliseconds. A fleet keeps a million of them.
type wireEntry struct {
	Domain       string        `json:"d,omitempty"` // in Redis, the field the entry is stored under
	Verdict      string        `json:"v,omitempty"`
	Findings     []wireFinding `json:"f,omitempty"`
	FirstSeen    int64         `json:"fs"`
	LastSeen     int64         `json:"ls,omitempty"`
	Messages     uint64        `json:"n,omitempty"`
	FailingSince int64         `json:"fl,omitempty"`
	Changed      int64         `json:"ch,omitempty"`
	Changes      []wireChange  `json:"h,omitempty"`
	AuditedAt    int64         `json:"aa,omitempty"`
	AuditVerdict string        `json:"av,omitempty"`
}

type wireFinding struct {
	ID     string `json:"i"`
	Status string `json:"s"`
	Detail string `json:"d,omitempty"`
	Fix    string `json:"x,omitempty"`
}

type wireChange struct {
	At       int64         `json:"t"`
	From     string        `json:"f,omitempty"`
	To       string        `json:"o"`
	Findings []wireFinding `json:"c,omitempty"`
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func wireFindings(fs []Finding) []wireFinding {
	if len(fs) == 0 {
		return nil
	}
	out := make([]wireFinding, len(fs))
	for i, f := range fs {
		out[i] = wireFinding{f.ID, f.Status, f.Detail, f.Fix}
	}
	return out
}

func findings(ws []wireFinding) []Finding {
	if len(ws) == 0 {
		return nil
	}
	out := make([]Finding, len(ws))
	for i, w := range ws {
		out[i] = Finding{w.ID, w.Status, w.Detail, w.Fix}
	}
	return out
}

// MarshalJSON writes the compact form.
func (e *Entry) MarshalJSON() ([]byte, error) {
	w := wireEntry{Domain: e.Domain, Verdict: e.Verdict, Findings: wireFindings(e.Findings), FirstSeen: millis(e.FirstSeen),
		LastSeen: millis(e.LastSeen), Messages: e.Messages, FailingSince: millis(e.FailingSince), Changed: millis(e.Changed),
		AuditedAt: millis(e.AuditedAt), AuditVerdict: e.AuditVerdict}
	for _, c := range e.Changes {
		w.Changes = append(w.Changes, wireChange{millis(c.At), c.From, c.To, wireFindings(c.Findings)})
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the compact form.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var w wireEntry
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*e = Entry{Domain: w.Domain, Verdict: w.Verdict, Findings: findings(w.Findings), FirstSeen: fromMillis(w.FirstSeen),
		LastSeen: fromMillis(w.LastSeen), Messages: w.Messages, FailingSince: fromMillis(w.FailingSince), Changed: fromMillis(w.Changed),
		AuditedAt: fromMillis(w.AuditedAt), AuditVerdict: w.AuditVerdict}
	for _, c := range w.Changes {
		e.Changes = append(e.Changes, Change{At: fromMillis(c.At), From: c.From, To: c.To, Findings: findings(c.Findings)})
	}
	return nil
}
