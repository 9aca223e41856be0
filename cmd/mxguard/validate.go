package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/policy"
)

// validateFlagSet is the flag set of `mxguard validate`, parsed into path.
func validateFlagSet(path *string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(path, "config", "", "configuration `FILE` to check (default: the built-in one)")
	return fs
}

// runValidate checks a configuration file, like `nginx -t`. A valid file
// exits 0 even when it draws warnings.
func runValidate(args []string, stdout, stderr io.Writer) int {
	path := new(string)
	fs := validateFlagSet(path, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	if fs.NArg() == 1 && *path == "" {
		*path = fs.Arg(0)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return exitUsage
	}
	if _, err := policy.New(cfg.Engine()); err != nil {
		fmt.Fprintf(stderr, "mxguard: %s: %v\n", cfg.Source, err)
		return exitUsage
	}
	var milter, policyService commandTimeout // asked of Postfix for the front ends that are on
	if cfg.Milter.Listen.Spec != "" {
		milter = postfixCommandTimeout()
	}
	if cfg.PolicyService.Listen.Spec != "" {
		policyService = postfixPolicyTimeout(cfg.PolicyService.Listen)
	}
	for _, w := range warnings(cfg, milter, policyService) {
		fmt.Fprintf(stderr, "mxguard: warning: %s\n", w)
	}
	var served []string
	for _, f := range []struct{ name, listen string }{
		{"milter", cfg.Milter.Listen.Spec}, {"policy service", cfg.PolicyService.Listen.Spec}, {"check API", cfg.API.Listen},
	} {
		if f.listen != "" {
			served = append(served, f.name+" "+f.listen)
		}
	}
	fmt.Fprintf(stdout, "%s: configuration OK (%s)\n", cfg.Source, strings.Join(served, ", "))
	return exitPass
}

// commandTimeout is how long Postfix waits for a front end's answer
// (milter_command_timeout, the policy service's timeout) and where that
// came from.
type commandTimeout struct {
	d      time.Duration
	source string
}

// postfixDefaultCommandTimeout is milter_command_timeout's default.
const postfixDefaultCommandTimeout = 30 * time.Second

// postconfPaths is where postconf is looked for: $PATH, then where Postfix
// installs it, which is often outside a user's $PATH.
var postconfPaths = []string{"postconf", "/usr/sbin/postconf", "/usr/local/sbin/postconf"}

// postfixCommandTimeout asks this host's Postfix for milter_command_timeout,
// and falls back to Postfix's default, saying why.
func postfixCommandTimeout() commandTimeout {
	fallback := func(why string) commandTimeout {
		return commandTimeout{postfixDefaultCommandTimeout, "Postfix's default; " + why}
	}
	values, why := postconf("milter_command_timeout")
	if why != "" {
		return fallback(why)
	}
	value := strings.TrimSpace(values[0])
	d, ok := postfixDuration(value)
	if !ok {
		return fallback(fmt.Sprintf("postconf printed %q", value))
	}
	return commandTimeout{d, "from postconf"}
}

// shippedPolicyTimeout is the timeout configs/postfix/policy-service.cf
// gives check_policy_service.
const shippedPolicyTimeout = 10 * time.Second

// policyRestrictions are the restriction lists that may call a policy
// service (postconf(5)).
var policyRestrictions = []string{"smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
	"smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions", "smtpd_end_of_data_restrictions"}

// postfixPolicyTimeout asks this host's Postfix how long it waits for the
// policy service at listen: the timeout= of its check_policy_service
// entry, else smtpd_policy_service_timeout (the shortest, if several name
// it). Without postconf or such an entry it falls back to the shipped
// snippet's, saying why.
func postfixPolicyTimeout(listen config.Socket) commandTimeout {
	fallback := func(why string) commandTimeout {
		return commandTimeout{shippedPolicyTimeout, "what configs/postfix/policy-service.cf sets; " + why}
	}
	values, why := postconf(append([]string{"smtpd_policy_service_timeout"}, policyRestrictions...)...)
	if why != "" {
		return fallback(why)
	}
	var found *commandTimeout
	for _, list := range values[1:] {
		for _, e := range policyServices(list) {
			if !samePolicyServer(e.server, listen) {
				continue
			}
			value, source := e.timeout, "timeout= of its check_policy_service, from postconf"
			if value == "" {
				value, source = strings.TrimSpace(values[0]), "smtpd_policy_service_timeout, from postconf"
			}
			d, ok := postfixDuration(value)
			if !ok {
				return fallback(fmt.Sprintf("postconf printed the timeout %q", value))
			}
			if found == nil || d < found.d {
				found = &commandTimeout{d, source}
			}
		}
	}
	if found == nil {
		return fallback("postconf shows no check_policy_service for " + listen.Spec)
	}
	return *found
}

// policyService is one check_policy_service entry of a restriction list.
type policyService struct{ server, timeout string }

// policyServices finds the check_policy_service entries of a restriction
// list: "check_policy_service SERVER" or, with attributes,
// "check_policy_service { SERVER, timeout=10s, ... }" (postconf(5)).
func policyServices(list string) []policyService {
	var words []string
	for s := list; ; {
		s = strings.TrimLeft(s, ", \t")
		if s == "" {
			break
		}
		end := strings.IndexAny(s, ", \t{")
		if s[0] == '{' {
			end = strings.IndexByte(s, '}') + 1
		}
		if end <= 0 {
			end = len(s)
		}
		words, s = append(words, s[:end]), s[end:]
	}
	var out []policyService
	for i := 0; i+1 < len(words); i++ {
		if words[i] != "check_policy_service" {
			continue
		}
		group, ok := strings.CutPrefix(words[i+1], "{")
		if !ok {
			out = append(out, policyService{server: words[i+1]})
			continue
		}
		attrs := strings.FieldsFunc(strings.TrimSuffix(group, "}"), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(attrs) == 0 {
			continue
		}
		e := policyService{server: attrs[0]}
		for _, a := range attrs[1:] {
			if value, ok := strings.CutPrefix(a, "timeout="); ok {
				e.timeout = value
			}
		}
		out = append(out, e)
	}
	return out
}

// samePolicyServer reports whether a check_policy_service server (inet:HOST:PORT
// or HOST:PORT, unix:PATH or PATH, relative to Postfix's queue directory
// unless absolute) is listen.
func samePolicyServer(server string, listen config.Socket) bool {
	if listen.Network == "tcp" {
		return strings.TrimPrefix(server, "inet:") == listen.Address
	}
	path := strings.TrimPrefix(server, "unix:")
	return path == listen.Address || !strings.HasPrefix(path, "/") && strings.HasSuffix(listen.Address, "/"+path)
}

// postconf asks this host's Postfix for the values of params, one each;
// why says what went wrong when it cannot.
func postconf(params ...string) (values []string, why string) {
	bin := ""
	for _, p := range postconfPaths {
		if found, err := exec.LookPath(p); err == nil {
			bin = found
			break
		}
	}
	if bin == "" {
		return nil, "postconf not found"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append([]string{"-x", "-h"}, params...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimSpace(firstLine(stderr.String()))
		if why == "" {
			why = err.Error()
		}
		return nil, "postconf failed: " + why
	}
	values = strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(values) != len(params) {
		return nil, fmt.Sprintf("postconf printed %d lines for %d parameters", len(values), len(params))
	}
	return values, ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

var postfixTime = regexp.MustCompile(`^([0-9]+)([smhdw]?)$`)

// postfixDuration parses a Postfix time value: a number with an optional
// unit s, m, h, d or w (seconds when none).
func postfixDuration(s string) (time.Duration, bool) {
	m := postfixTime.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 32)
	if err != nil {
		return 0, false
	}
	unit := map[string]time.Duration{"": time.Second, "s": time.Second, "m": time.Minute,
		"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
	return time.Duration(n) * unit, true
}

// warnings lists settings of a valid configuration that will hurt, one line
// each, naming the key. milter and policyService are how long Postfix waits
// for each front end that is on.
func warnings(c *config.Config, milter, policyService commandTimeout) []string {
	var out []string
	d := c.DecisionTimeout.D
	if c.Milter.Listen.Spec != "" && d >= milter.d {
		out = append(out, c.Describe("decision_timeout",
			"%s is not below Postfix's milter_command_timeout %s (%s): Postfix gives up first and applies milter_default_action",
			d, milter.d, milter.source))
	}
	if c.PolicyService.Listen.Spec != "" && d >= policyService.d {
		out = append(out, c.Describe("decision_timeout",
			"%s is not below Postfix's timeout for the policy service, %s (%s): Postfix gives up first and applies its default_action, "+
				"so the mail leaves without a header; set decision_timeout below it, e.g. %s",
			d, policyService.d, policyService.source, max(policyService.d*4/5, time.Second).Truncate(time.Second)))
	}
	// Listeners reachable from other machines, and why that hurts.
	tcp := func(s config.Socket) string {
		if s.Network != "tcp" {
			return ""
		}
		return s.Address
	}
	for _, l := range []struct{ key, shown, addr, risk string }{
		{"milter.listen", c.Milter.Listen.Spec, tcp(c.Milter.Listen),
			"the milter protocol has no authentication: use 127.0.0.1, ::1 or a unix socket"},
		{"policy_service.listen", c.PolicyService.Listen.Spec, tcp(c.PolicyService.Listen),
			"the policy protocol has no authentication: use 127.0.0.1, ::1 or a unix socket"},
		{"metrics.listen", c.Metrics.Listen, c.Metrics.Listen,
			"/metrics has no authentication: use 127.0.0.1 or ::1"},
		{"api.listen", c.API.Listen, c.API.Listen,
			"the API speaks plain HTTP: its bearer token crosses the network in clear; put a TLS proxy in front"},
	} {
		if l.addr == "" {
			continue
		}
		host, _, _ := net.SplitHostPort(l.addr)
		if why := exposed(host); why != "" {
			out = append(out, c.Describe(l.key, "%s %s, and %s", l.shown, why, l.risk))
		}
	}
	// Spamhaus answers its public zones' queries from public resolvers with
	// a refusal (README, Blocklists): every lookup would be a temperror.
	if public := publicResolver(c.Resolver.Servers); public != "" {
		for _, l := range []struct {
			key   string
			zones []config.BlocklistZone
		}{{"checks.domain_blocklists", c.Checks.DomainBlocklists}, {"outbound.dnsbl_zones", c.Outbound.DNSBLZones}} {
			for _, z := range l.zones {
				if dqs, ok := spamhausDQS[string(z.Zone)]; ok {
					out = append(out, c.Describe(l.key, "%s through the public resolver %s: Spamhaus refuses such queries (127.255.255.254); use your own resolver, or a DQS key (KEY.%s)",
						z.Zone, public, dqs))
				}
			}
		}
	}
	return out
}

// spamhausDQS is the DQS zone of each public Spamhaus zone.
var spamhausDQS = map[string]string{"zen.spamhaus.org": "zen.dq.spamhaus.net", "dbl.spamhaus.org": "dbl.dq.spamhaus.net"}

// publicResolver returns the first of servers that is a well-known public
// resolver (Google, Cloudflare, Quad9, OpenDNS), or "".
func publicResolver(servers []string) string {
	for _, s := range servers {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		if ip, err := netip.ParseAddr(host); err == nil && publicResolvers[ip.Unmap()] {
			return s
		}
	}
	return ""
}

var publicResolvers = func() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, s := range []string{"8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844",
		"1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
		"9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9", "208.67.222.222", "208.67.220.220"} {
		m[netip.MustParseAddr(s)] = true
	}
	return m
}()

// exposed says how a listener on host is reachable from other machines, or
// "" if it is on loopback only.
func exposed(host string) string {
	if host == "" {
		return "listens on every interface"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		switch {
		case ip.IsUnspecified():
			return "listens on every interface"
		case !ip.IsLoopback():
			return "is not a loopback address"
		}
		return ""
	}
	if host == "localhost" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "" // serve will say it cannot listen there
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return fmt.Sprintf("resolves to %s, not a loopback address", ip)
		}
	}
	return ""
}
