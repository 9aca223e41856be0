package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/smtptest"
)

const sandboxUsage = `Usage: mxguard sandbox --spec FILE [--dns HOST:PORT] [--smtp-port N] [--config-out PATH]

Serves on loopback the DNS zone and the MX hosts' SMTP behaviours that FILE
describes (docs/SANDBOX.md), writes an mxguard configuration that uses them
and, once everything listens, prints one line to stdout:

  dns=HOST:PORT config=PATH

It runs until SIGTERM or SIGINT, then stops its servers, removes the
configuration and exits 0. A bad spec exits 64 with FILE:LINE and why.

Flags:
`

// sandboxOptions are the parsed flags of `mxguard sandbox`.
type sandboxOptions struct{ spec, dns, smtpPort, configOut string }

// sandboxFlagSet is the flag set of `mxguard sandbox`, parsed into o.
func sandboxFlagSet(o *sandboxOptions, stderr io.Writer) *flag.FlagSet {
	flags := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, sandboxUsage); flags.PrintDefaults() }
	flags.StringVar(&o.spec, "spec", "", "the sandbox `FILE` (YAML, see docs/SANDBOX.md)")
	flags.StringVar(&o.dns, "dns", "", "serve DNS (UDP and TCP) at loopback `HOST:PORT` (default: 127.0.0.1 at a free port)")
	flags.StringVar(&o.smtpPort, "smtp-port", "", "the SMTP `PORT` every MX host listens on (default: a free one)")
	flags.StringVar(&o.configOut, "config-out", "", "write the mxguard configuration to `PATH`, a new file, removed on exit (default: a temporary directory)")
	return flags
}

func runSandbox(args []string, stdout, stderr io.Writer) int {
	var o sandboxOptions
	flags := sandboxFlagSet(&o, stderr)
	specPath, dnsAddr, smtpPort, configOut := &o.spec, &o.dns, &o.smtpPort, &o.configOut
	if err := flags.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	if flags.NArg() > 0 {
		return usageError(stderr, fmt.Errorf("sandbox takes no arguments, got %q", flags.Args()))
	}
	if *specPath == "" {
		return usageError(stderr, errors.New("sandbox needs --spec FILE"))
	}
	var port uint16
	if *smtpPort != "" {
		p, err := config.ParsePort(*smtpPort)
		if err != nil {
			return usageError(stderr, fmt.Errorf("--smtp-port %s: %w", *smtpPort, err))
		}
		port = p
	}
	if *dnsAddr != "" {
		if err := checkLoopbackAddr(*dnsAddr); err != nil {
			return usageError(stderr, fmt.Errorf("--dns %w", err))
		}
	}
	if strings.ContainsAny(*configOut, "\r\n") {
		return usageError(stderr, errors.New("--config-out: the path goes on one line of output: no line breaks"))
	}
	spec, err := loadSandboxSpec(*specPath)
	if err != nil {
		return usageError(stderr, err)
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sb, err := startSandbox(spec, *dnsAddr, port)
	if err != nil {
		log.Error("sandbox did not start", "error", err)
		return 1
	}
	path, remove, err := sb.writeConfig(spec, *configOut)
	if err == nil {
		// Programs read this line: the path as it is, not escaped.
		if _, err = fmt.Fprintf(unwrap(stdout), "dns=%s config=%s\n", sb.dns.Addr, path); err != nil {
			remove()
		}
	}
	if err != nil {
		log.Error("sandbox did not start", "error", err)
		sb.close()
		return 1
	}
	log.Info("sandbox ready", "spec", spec.file, "dns", sb.dns.Addr, "smtp_port", sb.port,
		"mx_hosts", len(spec.listeners), "config", path)
	<-ctx.Done()
	connections := 0
	for _, s := range sb.servers {
		connections += s.Connections()
	}
	err = errors.Join(sb.close(), remove())
	log.Info("sandbox stopped", "dns_queries", sb.dns.Queries(), "smtp_connections", connections)
	if err != nil {
		log.Error("sandbox did not stop cleanly", "error", err)
		return 1
	}
	return exitPass
}

// checkLoopbackAddr accepts IP:PORT on loopback; port 0 picks a free one.
func checkLoopbackAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want a loopback IP:PORT such as 127.0.0.1:5353", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%q: not a loopback address; the sandbox listens on loopback only (127.0.0.0/8, ::1)", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		return fmt.Errorf("%q: the port must be 0-65535", s)
	}
	return nil
}

// sandboxSpec is a parsed sandbox file.
type sandboxSpec struct {
	file      string
	zone      *smtptest.Zone
	listeners []sandboxListener
	config    *yaml.Node // the config section: a mapping, or nil
}

// sandboxListener is one MX host: an address and how it treats connections.
type sandboxListener struct {
	ip       netip.Addr
	behavior smtptest.Behavior
	closed   bool // nothing listens: connections are refused
}

func loadSandboxSpec(path string) (*sandboxSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	return parseSandboxSpec(path, data)
}

// parseSandboxSpec reads a spec strictly: an unknown key, a duplicate, a bad
// value or an address off loopback is an error that names the file and line.
func parseSandboxSpec(file string, data []byte) (*sandboxSpec, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(file, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlSyntaxError(file, data, err)
		}
		return nil, fmt.Errorf("%s:%d: a second YAML document; a spec is one document", file, extra.Line)
	}
	if len(doc.Content) == 0 || isNull(deref(doc.Content[0])) {
		return nil, fmt.Errorf("%s: the spec is empty: describe a zone, smtp servers or both (docs/SANDBOX.md)", file)
	}
	p := specParser{file}
	s := &sandboxSpec{file: file, zone: smtptest.NewZone()}
	budget := maxSpecNodes
	err := p.fields(deref(doc.Content[0]), "", []string{"negative_ttl", "zone", "smtp", "config"}, func(key string, _, section *yaml.Node) error {
		// Each section is read with its aliases expanded, all from one budget.
		v := clone(section, &budget)
		if v == nil {
			return p.errorf(section, "%s: more than %d values once the spec's aliases are expanded", key, maxSpecNodes)
		}
		var err error
		switch key {
		case "negative_ttl":
			var ttl uint32
			if ttl, err = p.ttl(v, key); err == nil {
				s.zone.SetNegativeTTL(ttl)
			}
		case "zone":
			err = p.zone(v, s.zone)
		case "smtp":
			s.listeners, err = p.smtp(v)
		case "config":
			if isNull(v) {
				return nil // an empty section: the sandbox's settings alone
			}
			if v.Kind != yaml.MappingNode {
				return p.errorf(v, "config: want a mapping of mxguard configuration keys (configs/mxguard.yaml), got %s", kindOf(v))
			}
			s.config = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	// The config section is checked now, before anything listens.
	if _, err := s.mxguardConfig("127.0.0.1:53", 25); err != nil {
		return nil, err
	}
	return s, nil
}

// yamlSyntaxError reports a YAML syntax error as the configuration loader
// does, with the line where the text stops being YAML: config.Parse reads
// the text the same way and fails there before it looks at any key.
func yamlSyntaxError(file string, data []byte, err error) error {
	if _, perr := config.Parse(file, data); perr != nil {
		return perr
	}
	return fmt.Errorf("%s: %v", file, err)
}

// specParser walks the YAML tree of a spec; every error names file and line.
type specParser struct{ file string }

func (p specParser) errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", p.file, n.Line, fmt.Sprintf(format, args...))
}

func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func kindOf(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

// pairs walks a mapping whose keys are values of the spec (names, addresses).
func (p specParser) pairs(n *yaml.Node, where string, fn func(k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "%s: want a mapping (key: value lines), got %s", where, kindOf(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode {
			return p.errorf(k, "%s: want a single value as the key, got %s", where, kindOf(k))
		}
		if err := fn(k, deref(n.Content[i+1])); err != nil {
			return err
		}
	}
	return nil
}

// fields walks a mapping of known keys, each set at most once; where is ""
// at the top level.
func (p specParser) fields(n *yaml.Node, where string, known []string, fn func(key string, k, v *yaml.Node) error) error {
	loc, prefix := "at the top level", ""
	if where != "" {
		loc, prefix = "in "+where, where+": "
	}
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "%swant a mapping (key: value lines), got %s", prefix, kindOf(n))
	}
	seen := map[string]int{}
	return p.pairs(n, where, func(k, v *yaml.Node) error {
		if !slices.Contains(known, k.Value) {
			return p.errorf(k, "unknown key %q %s (known: %s)", k.Value, loc, strings.Join(known, ", "))
		}
		if line, ok := seen[k.Value]; ok {
			return p.errorf(k, "%s%s is set twice (first on line %d)", prefix, k.Value, line)
		}
		seen[k.Value] = k.Line
		return fn(k.Value, k, v)
	})
}

// scalar returns the text of a single value.
func (p specParser) scalar(n *yaml.Node, where string) (string, error) {
	n = deref(n)
	if isNull(n) {
		return "", p.errorf(n, "%s: has no value", where)
	}
	if n.Kind != yaml.ScalarNode {
		return "", p.errorf(n, "%s: want a single value, got %s", where, kindOf(n))
	}
	return n.Value, nil
}

// values returns the items of a list of single values; one value alone is
// a list of one.
func (p specParser) values(n *yaml.Node, where string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		_, err := p.scalar(n, where)
		return []*yaml.Node{n}, err
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		items[i] = deref(item)
		if _, err := p.scalar(items[i], where); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// maxTTL is the largest TTL (RFC 2181 section 8).
const maxTTL = 1<<31 - 1

// ttl reads whole seconds, as a number (300) or a duration (5m).
func (p specParser) ttl(n *yaml.Node, where string) (uint32, error) {
	s, err := p.scalar(n, where)
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
	return 0, p.errorf(n, "%s: %q is not a TTL: whole seconds up to %d, as a number (300) or a duration (5m)", where, s, maxTTL)
}

// duration reads the DURATION of "delay 2s" and the like.
func (p specParser) duration(n *yaml.Node, where, s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, p.errorf(n, "%s: %q is not a duration; write it like 500ms or 2s", where, strings.TrimSpace(s))
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

func (p specParser) zone(n *yaml.Node, z *smtptest.Zone) error {
	if isNull(n) {
		return nil
	}
	seen := map[string]int{}
	return p.pairs(n, "zone", func(k, v *yaml.Node) error {
		owner, reverse, err := zoneOwner(k.Value)
		if err != nil {
			return p.errorf(k, "zone: %v", err)
		}
		if line, ok := seen[owner]; ok {
			return p.errorf(k, "zone: %s names %s again (first on line %d)", k.Value, strings.TrimSuffix(owner, "."), line)
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
func (p specParser) zoneEntry(z *smtptest.Zone, owner string, reverse bool, k, v *yaml.Node) error {
	where := "zone " + k.Value
	known := zoneKeys
	if reverse {
		known = reverseKeys
		where += fmt.Sprintf(" (%s)", strings.TrimSuffix(owner, "."))
	}
	if isNull(v) {
		return p.errorf(k, "%s: has no records; give it %s", where, strings.Join(known[1:], ", "))
	}
	got, keys := map[string]*yaml.Node{}, map[string]*yaml.Node{}
	if err := p.fields(v, where, known, func(key string, kn, vn *yaml.Node) error {
		got[key], keys[key] = vn, kn
		return nil
	}); err != nil {
		return err
	}
	for _, key := range known {
		if got["cname"] != nil && key != "cname" && key != "ttl" && key != "fault" && got[key] != nil {
			return p.errorf(keys[key], "%s: a name with a CNAME has no other records (RFC 1034 section 3.6.2); put %s on its target", where, key)
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
			return p.errorf(n, "%s: cname: a name has one CNAME", where)
		}
		for _, item := range items {
			rr, err := record(key, item.Value, dns.RR_Header{Name: owner, Rrtype: recordTypes[key], Class: dns.ClassINET, Ttl: ttl})
			if err == nil {
				err = z.Add(rr.String())
			}
			if err != nil {
				return p.errorf(item, "%s: %s: %v", where, key, err)
			}
			records++
		}
	}
	if n := got["fault"]; n != nil {
		return p.faults(z, owner, n, where+": fault")
	}
	if records == 0 {
		return p.errorf(k, "%s: has no records and no fault", where)
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
func (p specParser) faults(z *smtptest.Zone, owner string, n *yaml.Node, where string) error {
	if n.Kind != yaml.MappingNode {
		f, err := p.fault(n, where)
		if err == nil {
			z.SetFault(owner, f)
		}
		return err
	}
	return p.fields(n, where, slices.Sorted(maps.Keys(recordTypes)), func(key string, _, v *yaml.Node) error {
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

func (p specParser) fault(n *yaml.Node, where string) (smtptest.Fault, error) {
	s, err := p.scalar(n, where)
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
	return smtptest.Fault{}, p.errorf(n, "%s: %q is not a fault: want servfail, refused, drop, truncate, wrong_id or delay DURATION", where, s)
}

func (p specParser) smtp(n *yaml.Node) ([]sandboxListener, error) {
	if isNull(n) {
		return nil, nil
	}
	var listeners []sandboxListener
	seen := map[netip.Addr]int{}
	err := p.pairs(n, "smtp", func(k, v *yaml.Node) error {
		ip, err := netip.ParseAddr(k.Value)
		if err != nil || ip.Zone() != "" {
			return p.errorf(k, "smtp: %q is not an IP address; MX hosts listen on loopback addresses such as 127.0.1.1", k.Value)
		}
		ip = ip.Unmap()
		if !ip.IsLoopback() {
			return p.errorf(k, "smtp: %s is not a loopback address; the sandbox listens on loopback only (127.0.0.0/8, ::1)", ip)
		}
		if line, ok := seen[ip]; ok {
			return p.errorf(k, "smtp: %s is listed twice (first on line %d)", ip, line)
		}
		seen[ip] = k.Line
		l, err := p.behavior(v, "smtp "+k.Value)
		if err != nil {
			return err
		}
		if l.behavior == smtptest.Blackhole && !l.closed && !ip.Is4() {
			return p.errorf(v, "smtp %s: blackhole needs an IPv4 address", ip)
		}
		l.ip = ip
		listeners = append(listeners, l)
		return nil
	})
	return listeners, err
}

const behaviorHelp = "want accept, greet554, not_smtp, silent, blackhole, reset, closed, slow_greeting DURATION, or a mapping with banner or drip"

func (p specParser) behavior(n *yaml.Node, where string) (sandboxListener, error) {
	if n.Kind == yaml.MappingNode {
		return p.rawGreeting(n, where)
	}
	s, err := p.scalar(n, where)
	if err != nil {
		return sandboxListener{}, err
	}
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), " ")
	if b, ok := specBehaviors[name]; ok && !hasArg {
		return sandboxListener{behavior: b}, nil
	}
	switch {
	case name == "closed" && !hasArg:
		return sandboxListener{closed: true}, nil
	case name == "slow_greeting" && hasArg:
		d, err := p.duration(n, where, arg)
		return sandboxListener{behavior: smtptest.SlowGreeting(d)}, err
	}
	return sandboxListener{}, p.errorf(n, "%s: %q is not a behaviour: %s", where, s, behaviorHelp)
}

// rawGreeting reads {banner: TEXT, delay: D} or {drip: TEXT, interval: D}.
func (p specParser) rawGreeting(n *yaml.Node, where string) (sandboxListener, error) {
	got := map[string]*yaml.Node{}
	if err := p.fields(n, where, []string{"banner", "delay", "drip", "interval"}, func(key string, _, v *yaml.Node) error {
		got[key] = v
		return nil
	}); err != nil {
		return sandboxListener{}, err
	}
	get := func(key string, dur bool) (string, time.Duration, error) {
		v := got[key]
		if v == nil {
			return "", 0, nil
		}
		s, err := p.scalar(v, where+": "+key)
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
			return sandboxListener{}, err
		}
		_, delay, err := get("delay", true)
		return sandboxListener{behavior: smtptest.Banner(text, delay)}, err
	case got["drip"] != nil && got["interval"] != nil && got["banner"] == nil && got["delay"] == nil:
		text, _, err := get("drip", false)
		if err != nil {
			return sandboxListener{}, err
		}
		_, interval, err := get("interval", true)
		return sandboxListener{behavior: smtptest.Drip(text, interval)}, err
	}
	return sandboxListener{}, p.errorf(n, "%s: want banner: TEXT (and optionally delay: DURATION), or drip: TEXT and interval: DURATION", where)
}

// sandboxKey is a configuration key the sandbox fills in.
type sandboxKey struct {
	section, key string
	value        *yaml.Node
	// owned keys point at the sandbox: the spec may not set them. The
	// others are defaults for tests, which the spec's config may change.
	owned bool
}

// mxguardConfig returns the mxguard configuration for the sandbox: the
// spec's config section plus the sandbox's resolver and probe port, with
// loopback probing, short timeouts and identity checks of loopback clients
// unless the section says otherwise. It is checked as `mxguard validate`
// checks a file, and its errors name the lines of the spec.
func (s *sandboxSpec) mxguardConfig(dnsAddr string, port uint16) ([]byte, error) {
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
		case isNull(section): // an empty section
			*section = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: section.Line}
		case section.Kind != yaml.MappingNode:
			continue // the loader says what is wrong with it
		}
		if kn, _ := lookup(section, k.key); kn != nil {
			if k.owned {
				return nil, fmt.Errorf("%s:%d: config: %s.%s is the sandbox's own (its DNS server and MX port); leave it out", s.file, kn.Line, k.section, k.key)
			}
			continue
		}
		section.Content = append(section.Content, str(k.key), k.value)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by mxguard sandbox for %s; removed when the sandbox stops.\n", strconv.Quote(s.file))
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("%s: config: %w", s.file, err)
	}
	enc.Close()
	c, err := config.Parse(s.file, b.Bytes())
	if err != nil {
		return nil, s.configError(err, b.Bytes(), root)
	}
	if _, err := policy.New(c.Engine()); err != nil {
		return nil, fmt.Errorf("%s: config: %w", s.file, err)
	}
	return b.Bytes(), nil
}

// configError turns the loader's error about the generated text into one
// about the spec: each "FILE:LINE:" gets the line of the spec the value
// came from.
func (s *sandboxSpec) configError(err error, text []byte, root *yaml.Node) error {
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
	prefix := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(s.file) + `(?::([0-9]+))?: `)
	return errors.New(prefix.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(prefix.FindStringSubmatch(m)[1])
		if line, ok := lines[n]; ok {
			return fmt.Sprintf("%s:%d: config: ", s.file, line)
		}
		return s.file + ": config: "
	}))
}

// lookup finds key in a mapping node.
func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// maxSpecNodes bounds a spec with its aliases expanded: a few lines of
// nested aliases would otherwise make billions of nodes, and a list named
// by many names as many records.
const maxSpecNodes = 100_000

// clone copies a node tree, aliases resolved, keeping the lines it came
// from; nil when that would take more than *budget nodes.
func clone(n *yaml.Node, budget *int) *yaml.Node {
	if *budget--; *budget < 0 {
		return nil
	}
	n = deref(n)
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

// sandbox is a running spec: its DNS server and MX hosts.
type sandbox struct {
	dns     *smtptest.DNSServer
	port    uint16
	servers []*smtptest.SMTPServer
}

// startSandbox serves the spec's zone at dnsAddr (default: 127.0.0.1 at a
// free port) and its MX hosts at port (0: a free one).
func startSandbox(spec *sandboxSpec, dnsAddr string, port uint16) (*sandbox, error) {
	sb := &sandbox{}
	var err error
	if dnsAddr == "" {
		sb.dns, err = smtptest.StartDNS(spec.zone)
	} else {
		sb.dns, err = smtptest.StartDNSAt(dnsAddr, spec.zone)
	}
	if err != nil {
		return nil, err
	}
	for try := 1; ; try++ {
		sb.port = port
		if port == 0 {
			// Below the Linux ephemeral range (32768-60999), as smtptest's
			// own: outgoing connections never hold it.
			sb.port = uint16(20000 + rand.IntN(12000))
		}
		err = sb.serve(spec.listeners)
		if err == nil {
			return sb, nil
		}
		if port != 0 || try == 50 || !errors.Is(err, syscall.EADDRINUSE) {
			sb.close()
			return nil, err
		}
	}
}

// serve starts every MX host on the sandbox port, or none.
func (sb *sandbox) serve(listeners []sandboxListener) error {
	var err error
	for _, l := range listeners {
		addr := netip.AddrPortFrom(l.ip, sb.port).String()
		if l.closed {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err != nil {
				err = fmt.Errorf("%s should refuse connections, but: %w", addr, err)
				break
			}
			ln.Close()
			continue
		}
		var srv *smtptest.SMTPServer
		if srv, err = smtptest.StartSMTP(addr, l.behavior); err != nil {
			break
		}
		sb.servers = append(sb.servers, srv)
	}
	if err != nil {
		for _, srv := range sb.servers {
			srv.Close()
		}
		sb.servers = nil
	}
	return err
}

func (sb *sandbox) close() error {
	err := sb.dns.Close()
	for _, srv := range sb.servers {
		err = errors.Join(err, srv.Close())
	}
	return err
}

// writeConfig writes the sandbox's mxguard configuration to path, or into a
// new temporary directory if path is empty. It returns the absolute path
// and what removes it.
func (sb *sandbox) writeConfig(spec *sandboxSpec, path string) (string, func() error, error) {
	data, err := spec.mxguardConfig(sb.dns.Addr, sb.port)
	if err != nil {
		return "", nil, err
	}
	if path == "" {
		dir, err := os.MkdirTemp("", "mxguard-sandbox-")
		if err != nil {
			return "", nil, err
		}
		path = filepath.Join(dir, "mxguard.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		return path, func() error { return os.RemoveAll(dir) }, nil
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", nil, err
	}
	// A new file only: it is removed on exit, and must never be someone's
	// real configuration.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("--config-out: %w (it must not exist: the sandbox removes it on exit)", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", nil, err
	}
	return path, func() error { return os.Remove(path) }, nil
}
