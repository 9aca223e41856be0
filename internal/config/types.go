package config

import (
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/policy"
)

// lineError is a value error at a line of the file.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return e.msg }

func errAt(n *yaml.Node, format string, args ...any) error {
	return &lineError{n.Line, fmt.Sprintf(format, args...)}
}

func scalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, "want %s, got %s", what, KindOf(n))
	}
	return n.Value, nil
}

// Duration is a Go duration string such as "500ms" or "2s". Bare numbers
// are refused: "timeout: 5" would otherwise mean 5 nanoseconds.
type Duration struct{ D time.Duration }

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n, "a duration such as 2s")
	if err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || n.Tag != "!!str" {
		return errAt(n, "%q is not a duration; write it like 500ms, 2s or 5m", s)
	}
	if v < 0 {
		return errAt(n, "%q is negative", s)
	}
	d.D = v
	return nil
}

// Prefix is a CIDR network; a bare address means just that address.
type Prefix struct{ P netip.Prefix }

// UnmarshalYAML parses "192.0.2.0/24", "2001:db8::/32" or "192.0.2.7".
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n, "a network such as 192.0.2.0/24")
	if err != nil {
		return err
	}
	if p.P, err = ParsePrefix(s); err != nil {
		return errAt(n, "%v", err)
	}
	return nil
}

// ParsePrefix parses a network as the configuration's lists of networks
// take it: CIDR, or a bare address meaning just that address. IPv4-mapped
// IPv6 networks become IPv4 ones, because addresses are compared unmapped;
// host bits set are refused rather than silently dropped.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network", s)
		}
		return netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network in CIDR notation", s)
	}
	if pfx.Addr().Is4In6() {
		if pfx.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q mixes IPv4-mapped and other IPv6 addresses", s)
		}
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
	}
	if pfx != pfx.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, pfx.Masked())
	}
	return pfx, nil
}

// Domain is a domain name, normalised (lowercase, A-labels, no trailing dot).
type Domain string

// UnmarshalYAML parses and normalises a domain name.
func (d *Domain) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n, "a domain name")
	if err != nil {
		return err
	}
	v, err := policy.NormalizeDomain(s)
	if err != nil {
		return errAt(n, "%v", err)
	}
	*d = Domain(v)
	return nil
}

// Actions maps check IDs to actions. Checks a file leaves out keep their
// default action.
type Actions map[policy.CheckID]policy.Verdict

// UnmarshalYAML parses "check-id: action" pairs into the map.
func (a *Actions) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return errAt(n, "want a mapping of check ID to action")
	}
	if *a == nil {
		*a = Actions{}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		id := policy.CheckID(k.Value)
		if !id.Known() {
			ids := make([]string, 0, len(policy.CheckIDs()))
			for _, c := range policy.CheckIDs() {
				ids = append(ids, string(c))
			}
			return errAt(k, "unknown check %q%s", k.Value, hint(k.Value, ids))
		}
		if line, ok := seen[k.Value]; ok {
			return errAt(k, "check %q is listed twice (first on line %d)", k.Value, line)
		}
		seen[k.Value] = k.Line
		s, err := scalar(v, "an action")
		if err != nil {
			return err
		}
		act, err := policy.ParseAction(s)
		if err != nil {
			return errAt(v, "%v", err)
		}
		(*a)[id] = act
	}
	return nil
}

// OnTempError is "accept" or "defer".
type OnTempError struct{ V policy.Verdict }

// UnmarshalYAML parses accept or defer.
func (o *OnTempError) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n, "accept or defer")
	if err != nil {
		return err
	}
	switch s {
	case "accept":
		o.V = policy.Pass
	case "defer":
		o.V = policy.Defer
	default:
		return errAt(n, "%q: want accept or defer (a temporary error never rejects)", s)
	}
	return nil
}

// Socket is a milter socket in Postfix syntax: inet:HOST:PORT,
// inet6:HOST:PORT, unix:/path (or Sendmail's inet:PORT@HOST, local:/path).
type Socket struct {
	Network string // "tcp" or "unix"
	Address string // host:port or a path
	Spec    string // as written
}

func (s Socket) String() string { return s.Spec }

// ParseSocket parses a socket spec.
func ParseSocket(spec string) (Socket, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || rest == "" {
		return Socket{}, fmt.Errorf("%q: want inet:HOST:PORT, inet6:HOST:PORT or unix:/path", spec)
	}
	switch kind {
	case "unix", "local":
		if !filepath.IsAbs(rest) {
			return Socket{}, fmt.Errorf("%q: the unix socket path must be absolute", spec)
		}
		return Socket{Network: "unix", Address: rest, Spec: spec}, nil
	case "inet", "inet6":
		host, port := "", ""
		if p, h, ok := strings.Cut(rest, "@"); ok { // Sendmail: PORT@HOST
			host, port = h, p
		} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			host, port = strings.Trim(rest[:i], "[]"), rest[i+1:]
		}
		if host == "" {
			return Socket{}, fmt.Errorf("%q: missing host; want %s:HOST:PORT (use 127.0.0.1 or ::1, not all interfaces by accident)", spec, kind)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Socket{}, fmt.Errorf("%q: bad or missing port", spec)
		}
		if ip, err := netip.ParseAddr(host); err == nil && (kind == "inet6") != ip.Is6() {
			return Socket{}, fmt.Errorf("%q: %s is not an %s address", spec, host, map[bool]string{true: "IPv6", false: "IPv4"}[kind == "inet6"])
		}
		return Socket{Network: "tcp", Address: netipJoin(host, port), Spec: spec}, nil
	}
	return Socket{}, fmt.Errorf("%q: unknown socket type %q (want inet, inet6 or unix)", spec, kind)
}

func netipJoin(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// UnmarshalYAML parses a socket spec.
func (s *Socket) UnmarshalYAML(n *yaml.Node) error {
	v, err := scalar(n, "a socket such as inet:127.0.0.1:8891")
	if err != nil {
		return err
	}
	if v == "" { // this front end is off
		*s = Socket{}
		return nil
	}
	sock, err := ParseSocket(v)
	if err != nil {
		return errAt(n, "%v", err)
	}
	*s = sock
	return nil
}

// FileMode is an octal permission string such as "0660".
type FileMode struct{ M fs.FileMode }

// UnmarshalYAML parses an octal mode.
func (m *FileMode) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n, "an octal mode such as \"0660\"")
	if err != nil {
		return err
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return errAt(n, "%q is not an octal permission mode such as \"0660\"", s)
	}
	if v&0o002 != 0 {
		return errAt(n, "%q lets every local user talk to the milter; use 0660 or stricter", s)
	}
	m.M = fs.FileMode(v)
	return nil
}

// ReplyAt is where the milter answers a defer or reject: "rcpt" or "mail".
type ReplyAt string

// UnmarshalYAML checks the stage name.
func (r *ReplyAt) UnmarshalYAML(n *yaml.Node) error {
	return oneOf(n, (*string)(r), "rcpt", "mail")
}

// LogLevel is debug, info, warn or error.
type LogLevel string

// UnmarshalYAML checks the level name.
func (l *LogLevel) UnmarshalYAML(n *yaml.Node) error {
	return oneOf(n, (*string)(l), "debug", "info", "warn", "error")
}

// LogFormat is text or json.
type LogFormat string

// UnmarshalYAML checks the format name.
func (f *LogFormat) UnmarshalYAML(n *yaml.Node) error {
	return oneOf(n, (*string)(f), "text", "json")
}

func oneOf(n *yaml.Node, dst *string, choices ...string) error {
	s, err := scalar(n, strings.Join(choices, ", "))
	if err != nil {
		return err
	}
	for _, c := range choices {
		if s == c {
			*dst = s
			return nil
		}
	}
	return errAt(n, "%q: want one of %s", s, strings.Join(choices, ", "))
}
