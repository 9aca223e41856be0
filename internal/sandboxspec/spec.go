// Package sandboxspec reads the spec of `mxguard sandbox`
// (docs/SANDBOX.md): a DNS zone, the SMTP behaviours of MX hosts and the
// mxguard configuration that uses them.
package sandboxspec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

// Spec is a parsed sandbox spec.
type Spec struct {
	File      string // the file it was read from
	Zone      *smtptest.Zone
	Listeners []Listener
	config    *yaml.Node // the config section: a mapping, or nil
}

// Listener is one MX host: an address and how it treats connections.
type Listener struct {
	IP       netip.Addr
	Behavior smtptest.Behavior
	Closed   bool // nothing listens: connections are refused
}

// Load reads the spec in the file at path.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	return Parse(path, data)
}

// Parse reads a spec strictly: an unknown key, a duplicate, a bad
// value or an address off loopback is an error that names the file and line.
func Parse(file string, data []byte) (*Spec, error) {
	root, err := config.ReadDocument(file, data, "a spec")
	if err != nil {
		return nil, err
	}
	if root == nil || config.IsNull(root) {
		return nil, fmt.Errorf("%s: the spec is empty: describe a zone, smtp servers or both (docs/SANDBOX.md)", file)
	}
	p := parser{config.Walker{File: file}}
	s := &Spec{File: file, Zone: smtptest.NewZone()}
	budget := maxNodes
	err = p.Fields(root, "", []string{"negative_ttl", "zone", "smtp", "config"}, func(key string, _, section *yaml.Node) error {
		// Each section is read with its aliases expanded, all from one budget.
		v := clone(section, &budget)
		if v == nil {
			return p.Errorf(section, "%s: more than %d values once the spec's aliases are expanded", key, maxNodes)
		}
		var err error
		switch key {
		case "negative_ttl":
			var ttl uint32
			if ttl, err = p.ttl(v, key); err == nil {
				s.Zone.SetNegativeTTL(ttl)
			}
		case "zone":
			err = p.zone(v, s.Zone)
		case "smtp":
			s.Listeners, err = p.smtp(v)
		case "config":
			if config.IsNull(v) {
				return nil // an empty section: the sandbox's settings alone
			}
			if v.Kind != yaml.MappingNode {
				return p.Errorf(v, "config: want a mapping of mxguard configuration keys (configs/mxguard.yaml), got %s", config.KindOf(v))
			}
			s.config = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	// The config section is checked now, before anything listens.
	if _, err := s.Config("127.0.0.1:53", 25); err != nil {
		return nil, err
	}
	return s, nil
}

// parser reads the parts of a spec; every error names file and line.
type parser struct{ config.Walker }

// values returns the items of a list of single values; one value alone is
// a list of one.
func (p parser) values(n *yaml.Node, where string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		_, err := p.Scalar(n, where)
		return []*yaml.Node{n}, err
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		items[i] = item
		if _, err := p.Scalar(items[i], where); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// maxTTL is the largest TTL (RFC 2181 section 8).
const maxTTL = 1<<31 - 1

// ttl reads whole seconds, as a number (300) or a duration (5m).
func (p parser) ttl(n *yaml.Node, where string) (uint32, error) {
	s, err := p.Scalar(n, where)
	if err != nil {
		return 0, err
	}
	if n.Tag == "!!int" {
		if v, err := strconv.ParseUint(s, 10, 31); err == nil {
			return uint32(v), nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d >= 0 && d%time.Second == 0 && d <= maxTTL*time.Second {
		return uint32(d / time.Second), nil
	}
	return 0, p.Errorf(n, "%s: %q is not a TTL: whole seconds up to %d, as a number (300) or a duration (5m)", where, s, maxTTL)
}

// duration reads the DURATION of "delay 2s" and the like.
func (p parser) duration(n *yaml.Node, where, s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, p.Errorf(n, "%s: %q is not a duration; write it like 500ms or 2s", where, strings.TrimSpace(s))
	}
	return d, nil
}

// The record keys of a zone name, in the order their records are added; an
// address stands for its reverse name, which takes PTR records only.
var (
	zoneKeys    = []string{"ttl", "a", "aaaa", "mx", "cname", "ptr", "txt", "fault"}
	reverseKeys = []string{"ttl", "ptr", "fault"}
	recordTypes = map[string]uint16{"a": dns.TypeA, "aaaa": dns.TypeAAAA, "mx": dns.TypeMX,
		"cname": dns.TypeCNAME, "ptr": dns.TypePTR, "txt": dns.TypeTXT}
)

func (p parser) zone(n *yaml.Node, z *smtptest.Zone) error {
	if config.IsNull(n) {
		return nil
	}
	seen := map[string]int{}
	return p.Pairs(n, "zone", func(k, v *yaml.Node) error {
		owner, reverse, err := zoneOwner(k.Value)
		if err != nil {
			return p.Errorf(k, "zone: %v", err)
		}
		if line, ok := seen[owner]; ok {
			return p.Errorf(k, "zone: %s names %s again (first on line %d)", k.Value, strings.TrimSuffix(owner, "."), line)
		}
		seen[owner] = k.Line
		return p.zoneEntry(z, owner, reverse, k, v)
	})
}

// zoneOwner is the owner name a zone key stands for: the name itself, or
// for an address its reverse name (in-addr.arpa, ip6.arpa).
func zoneOwner(key string) (owner string, reverse bool, err error) {
	if ip, err := netip.ParseAddr(key); err == nil {
		if ip.Zone() != "" {
			return "", false, fmt.Errorf("%q: an address with a zone has no reverse name", key)
		}
		rev, err := dns.ReverseAddr(ip.Unmap().String())
		return rev, true, err
	}
	name, err := hostName(key)
	return name, false, err
}

// hostName checks a name for the zone and returns it fully qualified, in
// lower case. Labels take letters, digits, '-' and '_' (as in _dmarc).
func hostName(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("%q is not a domain name (1 to 253 octets)", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q is not a domain name: each label has 1 to 63 octets", s)
		}
		for _, c := range []byte(label) {
			switch {
			case c >= 0x80:
				return "", fmt.Errorf("%q: write internationalized names in A-labels (xn--...)", s)
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return "", fmt.Errorf("%q is not a domain name: %q is not a letter, digit, '-' or '_'", s, c)
			}
		}
	}
	return name + ".", nil
}

// zoneEntry adds the records and faults of one zone name.
func (p parser) zoneEntry(z *smtptest.Zone, owner string, reverse bool, k, v *yaml.Node) error {
	where := "zone " + k.Value
	known := zoneKeys
	if reverse {
		known = reverseKeys
		where += fmt.Sprintf(" (%s)", strings.TrimSuffix(owner, "."))
	}
	if config.IsNull(v) {
		return p.Errorf(k, "%s: has no records; give it %s", where, strings.Join(known[1:], ", "))
	}
	got, keys := map[string]*yaml.Node{}, map[string]*yaml.Node{}
	if err := p.Fields(v, where, known, func(key string, kn, vn *yaml.Node) error {
		got[key], keys[key] = vn, kn
		return nil
	}); err != nil {
		return err
	}
	for _, key := range known {
		if got["cname"] != nil && key != "cname" && key != "ttl" && key != "fault" && got[key] != nil {
			return p.Errorf(keys[key], "%s: a name with a CNAME has no other records (RFC 1034 section 3.6.2); put %s on its target", where, key)
		}
	}
	ttl := uint32(smtptest.DefaultTTL)
	if n := got["ttl"]; n != nil {
		var err error
		if ttl, err = p.ttl(n, where+": ttl"); err != nil {
			return err
		}
	}
	records := 0
	for _, key := range known {
		n := got[key]
		if n == nil || key == "ttl" || key == "fault" {
			continue
		}
		items, err := p.values(n, where+": "+key)
		if err != nil {
			return err
		}
		if key == "cname" && len(items) > 1 {
			return p.Errorf(n, "%s: cname: a name has one CNAME", where)
		}
		for _, item := range items {
			rr, err := record(key, item.Value, dns.RR_Header{Name: owner, Rrtype: recordTypes[key], Class: dns.ClassINET, Ttl: ttl})
			if err == nil {
				err = z.Add(rr.String())
			}
			if err != nil {
				return p.Errorf(item, "%s: %s: %v", where, key, err)
			}
			records++
		}
	}
	if n := got["fault"]; n != nil {
		return p.faults(z, owner, n, where+": fault")
	}
	if records == 0 {
		return p.Errorf(k, "%s: has no records and no fault", where)
	}
	return nil
}

// record builds one record from its value in the spec.
func record(key, s string, h dns.RR_Header) (dns.RR, error) {
	switch key {
	case "a", "aaaa":
		ip, err := netip.ParseAddr(s)
		switch {
		case err != nil || ip.Zone() != "":
			return nil, fmt.Errorf("%q is not an IP address", s)
		case key == "a" && !ip.Is4():
			return nil, fmt.Errorf("%s is not an IPv4 address; IPv6 addresses go under aaaa", s)
		case key == "aaaa" && !ip.Is6():
			return nil, fmt.Errorf("%s is not an IPv6 address; IPv4 addresses go under a", s)
		case key == "a":
			return &dns.A{Hdr: h, A: ip.AsSlice()}, nil
		}
		return &dns.AAAA{Hdr: h, AAAA: ip.AsSlice()}, nil
	case "mx":
		f := strings.Fields(s)
		if len(f) != 2 {
			return nil, fmt.Errorf("%q: want PREFERENCE HOST, e.g. \"10 mx.example.test\" (\"0 .\" is a null MX)", s)
		}
		pref, err := strconv.ParseUint(f[0], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%q: the preference must be a number from 0 to 65535", s)
		}
		host := "."
		if f[1] != "." {
			if host, err = hostName(f[1]); err != nil {
				return nil, err
			}
		}
		return &dns.MX{Hdr: h, Preference: uint16(pref), Mx: host}, nil
	case "cname", "ptr":
		name, err := hostName(s)
		if err != nil {
			return nil, err
		}
		if key == "cname" {
			return &dns.CNAME{Hdr: h, Target: name}, nil
		}
		return &dns.PTR{Hdr: h, Ptr: name}, nil
	}
	// A TXT record is a list of strings of at most 255 octets each; SPF
	// and DMARC read them joined, so a long text is cut into such strings.
	var chunks []string
	for len(s) > 255 {
		chunks, s = append(chunks, s[:255]), s[255:]
	}
	return &dns.TXT{Hdr: h, Txt: append(chunks, s)}, nil
}

// faults reads a name's fault: one for every query, or one per record type.
func (p parser) faults(z *smtptest.Zone, owner string, n *yaml.Node, where string) error {
	if n.Kind != yaml.MappingNode {
		f, err := p.fault(n, where)
		if err == nil {
			z.SetFault(owner, f)
		}
		return err
	}
	return p.Fields(n, where, slices.Sorted(maps.Keys(recordTypes)), func(key string, _, v *yaml.Node) error {
		f, err := p.fault(v, where+" "+key)
		if err == nil {
			z.SetTypeFault(owner, recordTypes[key], f)
		}
		return err
	})
}

// The faults and behaviours that take no argument, by their names in a spec.
var (
	specFaults = map[string]smtptest.Fault{"servfail": smtptest.ServFail, "refused": smtptest.Refused,
		"drop": smtptest.Drop, "truncate": smtptest.Truncate, "wrong_id": smtptest.WrongID}
	specBehaviors = map[string]smtptest.Behavior{"accept": smtptest.Accept, "greet554": smtptest.Greet554,
		"not_smtp": smtptest.NotSMTP, "silent": smtptest.Silent, "blackhole": smtptest.Blackhole, "reset": smtptest.Reset}
)

func (p parser) fault(n *yaml.Node, where string) (smtptest.Fault, error) {
	s, err := p.Scalar(n, where)
	if err != nil {
		return smtptest.Fault{}, err
	}
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), " ")
	if f, ok := specFaults[name]; ok && !hasArg {
		return f, nil
	}
	if name == "delay" && hasArg {
		d, err := p.duration(n, where, arg)
		return smtptest.Delay(d), err
	}
	return smtptest.Fault{}, p.Errorf(n, "%s: %q is not a fault: want servfail, refused, drop, truncate, wrong_id or delay DURATION", where, s)
}

func (p parser) smtp(n *yaml.Node) ([]Listener, error) {
	if config.IsNull(n) {
		return nil, nil
	}
	var listeners []Listener
	seen := map[netip.Addr]int{}
	err := p.Pairs(n, "smtp", func(k, v *yaml.Node) error {
		ip, err := netip.ParseAddr(k.Value)
		if err != nil || ip.Zone() != "" {
			return p.Errorf(k, "smtp: %q is not an IP address; MX hosts listen on loopback addresses such as 127.0.1.1", k.Value)
		}
		ip = ip.Unmap()
		if !ip.IsLoopback() {
			return p.Errorf(k, "smtp: %s is not a loopback address; the sandbox listens on loopback only (127.0.0.0/8, ::1)", ip)
		}
		if line, ok := seen[ip]; ok {
			return p.Errorf(k, "smtp: %s is listed twice (first on line %d)", ip, line)
		}
		seen[ip] = k.Line
		l, err := p.behavior(v, "smtp "+k.Value)
		if err != nil {
			return err
		}
		if l.Behavior == smtptest.Blackhole && !l.Closed && !ip.Is4() {
			return p.Errorf(v, "smtp %s: blackhole needs an IPv4 address", ip)
		}
		l.IP = ip
		listeners = append(listeners, l)
		return nil
	})
	return listeners, err
}

const behaviorHelp = "want accept, greet554, not_smtp, silent, blackhole, reset, closed, slow_greeting DURATION, or a mapping with banner or drip"

func (p parser) behavior(n *yaml.Node, where string) (Listener, error) {
	if n.Kind == yaml.MappingNode {
		return p.rawGreeting(n, where)
	}
	s, err := p.Scalar(n, where)
	if err != nil {
		return Listener{}, err
	}
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), " ")
	if b, ok := specBehaviors[name]; ok && !hasArg {
		return Listener{Behavior: b}, nil
	}
	switch {
	case name == "closed" && !hasArg:
		return Listener{Closed: true}, nil
	case name == "slow_greeting" && hasArg:
		d, err := p.duration(n, where, arg)
		return Listener{Behavior: smtptest.SlowGreeting(d)}, err
	}
	return Listener{}, p.Errorf(n, "%s: %q is not a behaviour: %s", where, s, behaviorHelp)
}

// rawGreeting reads {banner: TEXT, delay: D} or {drip: TEXT, interval: D}.
func (p parser) rawGreeting(n *yaml.Node, where string) (Listener, error) {
	got := map[string]*yaml.Node{}
	if err := p.Fields(n, where, []string{"banner", "delay", "drip", "interval"}, func(key string, _, v *yaml.Node) error {
		got[key] = v
		return nil
	}); err != nil {
		return Listener{}, err
	}
	get := func(key string, dur bool) (string, time.Duration, error) {
		v := got[key]
		if v == nil {
			return "", 0, nil
		}
		s, err := p.Scalar(v, where+": "+key)
		if err != nil || !dur {
			return s, 0, err
		}
		d, err := p.duration(v, where+": "+key, s)
		return s, d, err
	}
	switch {
	case got["banner"] != nil && got["drip"] == nil && got["interval"] == nil:
		text, _, err := get("banner", false)
		if err != nil {
			return Listener{}, err
		}
		_, delay, err := get("delay", true)
		return Listener{Behavior: smtptest.Banner(text, delay)}, err
	case got["drip"] != nil && got["interval"] != nil && got["banner"] == nil && got["delay"] == nil:
		text, _, err := get("drip", false)
		if err != nil {
			return Listener{}, err
		}
		_, interval, err := get("interval", true)
		return Listener{Behavior: smtptest.Drip(text, interval)}, err
	}
	return Listener{}, p.Errorf(n, "%s: want banner: TEXT (and optionally delay: DURATION), or drip: TEXT and interval: DURATION", where)
}

// sandboxKey is a configuration key the sandbox fills in.
type sandboxKey struct {
	section, key string
	value        *yaml.Node
	// owned keys point at the sandbox: the spec may not set them. The
	// others are defaults for tests, which the spec's config may change.
	owned bool
}

// Config returns the mxguard configuration for the sandbox: the
// spec's config section plus the sandbox's resolver and probe port, with
// loopback probing, short timeouts and identity checks of loopback clients
// unless the section says otherwise. It is checked as `mxguard validate`
// checks a file, and its errors name the lines of the spec.
func (s *Spec) Config(dnsAddr string, port uint16) ([]byte, error) {
	str := func(v string) *yaml.Node {
		n := &yaml.Node{}
		n.SetString(v)
		return n
	}
	list := func(items ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Content: items}
	}
	keys := []sandboxKey{
		{"resolver", "servers", list(str(dnsAddr)), true},
		{"resolver", "timeout", str("1s"), false},
		{"probe", "port", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(int(port))}, true},
		{"probe", "allow_networks", list(str("127.0.0.0/8"), str("::1/128")), false},
		{"probe", "connect_timeout", str("1s"), false},
		{"probe", "greeting_timeout", str("2s"), false},
		{"identity", "skip_networks", list(), false},
		{"metrics", "listen", str(""), false},
		{"inventory", "path", str(""), false}, // a test's domains are not the host's
	}
	root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if s.config != nil {
		unbounded := math.MaxInt // s.config was read within the spec's budget
		root = clone(s.config, &unbounded)
	}
	for _, k := range keys {
		_, section := lookup(root, k.section)
		switch {
		case section == nil:
			section = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			root.Content = append(root.Content, str(k.section), section)
		case config.IsNull(section): // an empty section
			*section = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: section.Line}
		case section.Kind != yaml.MappingNode:
			continue // the loader says what is wrong with it
		}
		if kn, _ := lookup(section, k.key); kn != nil {
			if k.owned {
				return nil, fmt.Errorf("%s:%d: config: %s.%s is the sandbox's own (its DNS server and MX port); leave it out", s.File, kn.Line, k.section, k.key)
			}
			continue
		}
		section.Content = append(section.Content, str(k.key), k.value)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by mxguard sandbox for %s; removed when the sandbox stops.\n", strconv.Quote(s.File))
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("%s: config: %w", s.File, err)
	}
	enc.Close()
	c, err := config.Parse(s.File, b.Bytes())
	if err != nil {
		return nil, s.configError(err, b.Bytes(), root)
	}
	if _, err := policy.New(c.Engine()); err != nil {
		return nil, fmt.Errorf("%s: config: %w", s.File, err)
	}
	return b.Bytes(), nil
}

// configError turns the loader's error about the generated text into one
// about the spec: each "FILE:LINE:" gets the line of the spec the value
// came from.
func (s *Spec) configError(err error, text []byte, root *yaml.Node) error {
	lines := map[int]int{}
	var gen yaml.Node
	if yaml.Unmarshal(text, &gen) == nil && len(gen.Content) == 1 {
		var walk func(g, o *yaml.Node)
		walk = func(g, o *yaml.Node) {
			if _, ok := lines[g.Line]; !ok && o.Line > 0 {
				lines[g.Line] = o.Line
			}
			if len(g.Content) == len(o.Content) {
				for i := range g.Content {
					walk(g.Content[i], o.Content[i])
				}
			}
		}
		walk(gen.Content[0], root)
	}
	prefix := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(s.File) + `(?::([0-9]+))?: `)
	msg := prefix.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(prefix.FindStringSubmatch(m)[1])
		if line, ok := lines[n]; ok {
			return fmt.Sprintf("%s:%d: config: ", s.File, line)
		}
		return s.File + ": config: "
	})
	// A key set twice names the line of the first, too.
	return errors.New(firstOnLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(firstOnLine.FindStringSubmatch(m)[1])
		if line, ok := lines[n]; ok {
			return fmt.Sprintf("(first on line %d)", line)
		}
		return m
	}))
}

var firstOnLine = regexp.MustCompile(`\(first on line ([0-9]+)\)`)

// lookup finds key in a mapping node.
func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// maxNodes bounds a spec with its aliases expanded: a few lines of
// nested aliases would otherwise make billions of nodes, and a list named
// by many names as many records.
const maxNodes = 100_000

// clone copies a node tree, aliases resolved, keeping the lines it came
// from; nil when that would take more than *budget nodes.
func clone(n *yaml.Node, budget *int) *yaml.Node {
	if *budget--; *budget < 0 {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	c := *n
	c.Anchor, c.Alias = "", nil
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, child := range n.Content {
		if c.Content[i] = clone(child, budget); c.Content[i] == nil {
			return nil
		}
	}
	return &c
}
