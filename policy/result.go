package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Status is the outcome of one check.
type Status uint8

// The statuses, weakest first.
const (
	StatusPass Status = iota
	StatusSkip
	StatusWarn
	StatusTempError
	StatusFail
)

var statusNames = [...]string{
	StatusPass:      "pass",
	StatusSkip:      "skip",
	StatusWarn:      "warn",
	StatusTempError: "temperror",
	StatusFail:      "fail",
}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", s)
}

// MarshalText encodes the status by the name reports and the README use.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a status name (README, Checks).
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unknown status %q", b)
}

// CheckID names a check; the IDs are a public interface (headers, JSON, config keys).
type CheckID string

// CheckIDs lists every check in report order.
func CheckIDs() []CheckID {
	ids := make([]CheckID, len(checks))
	for i, c := range checks {
		ids[i] = c.id
	}
	return ids
}

// Known reports whether id names a check.
func (id CheckID) Known() bool {
	_, ok := checkIndex[id]
	return ok
}

// AboutDomain reports whether the check is about the sender domain (as opposed
// to the sending host); allow-lists pick their checks by this.
func (id CheckID) AboutDomain() bool {
	c, ok := checkIndex[id]
	return ok && c.aboutDomain
}

// AboutMessage reports whether the check is about the message (the milter's
// body stage, check --message) and its author domain.
func (id CheckID) AboutMessage() bool {
	c, ok := checkIndex[id]
	return ok && c.aboutMessage
}

// Result is what one check found.
type Result struct {
	ID     CheckID    `json:"id"`
	Status Status     `json:"status"`
	Detail string     `json:"detail"`
	Host   string     `json:"host"`
	IP     netip.Addr `json:"ip"`
	// Enhanced is the RFC 3463 subject.detail for a reply caused by this
	// result ("7.27" null MX, "7.25" reverse DNS); empty means "7.1".
	Enhanced string `json:"-"`
	fix      string
	// ownBound marks a temperror of mxguard's own making (a bound it keeps,
	// not the domain's trouble): never deferred (Policy.Decide).
	ownBound bool
}

// Finding reports whether the result is worth reporting: a warning, a
// failure, or a check that could not finish.
func (r Result) Finding() bool {
	return r.Status == StatusWarn || r.Status == StatusFail || r.Status == StatusTempError
}

// Fix says, for a warn or fail, what the owner of the domain or host should change.
func (r Result) Fix() string { return r.fix }

// Printable keeps a remote string safe for logs, headers and terminals:
// ASCII only, control characters and anything else as '?', cut at limit
// octets with "...".
func Printable(s string, limit int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= limit {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r >= 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
