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

// runValidate checks a configuration file, like `nginx -t`. A valid file
// exits 0 even when it draws warnings.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `FILE` to check (default: the built-in one)")
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
	for _, w := range warnings(cfg, postfixCommandTimeout()) {
		fmt.Fprintf(stderr, "mxguard: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: configuration OK (milter %s)\n", cfg.Source, cfg.Milter.Listen.Spec)
	return exitPass
}

// commandTimeout is Postfix's milter_command_timeout and where it came from.
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
	bin := ""
	for _, p := range postconfPaths {
		if found, err := exec.LookPath(p); err == nil {
			bin = found
			break
		}
	}
	if bin == "" {
		return fallback("postconf not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-x", "-h", "milter_command_timeout")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimSpace(firstLine(stderr.String()))
		if why == "" {
			why = err.Error()
		}
		return fallback("postconf failed: " + why)
	}
	value := strings.TrimSpace(stdout.String())
	d, ok := postfixDuration(value)
	if !ok {
		return fallback(fmt.Sprintf("postconf printed %q", value))
	}
	return commandTimeout{d, "from postconf"}
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
// each, naming the key.
func warnings(c *config.Config, postfix commandTimeout) []string {
	var out []string
	if d := c.DecisionTimeout.D; d >= postfix.d {
		out = append(out, c.Describe("decision_timeout",
			"%s is not below Postfix's milter_command_timeout %s (%s): Postfix gives up first and applies milter_default_action",
			d, postfix.d, postfix.source))
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
	return out
}

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
