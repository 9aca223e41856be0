package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/sandboxspec"
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
	spec, err := sandboxspec.Load(*specPath)
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
	log.Info("sandbox ready", "spec", spec.File, "dns", sb.dns.Addr, "smtp_port", sb.port,
		"mx_hosts", len(spec.Listeners), "config", path)
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

// sandbox is a running spec: its DNS server and MX hosts.
type sandbox struct {
	dns     *smtptest.DNSServer
	port    uint16
	servers []*smtptest.SMTPServer
}

// startSandbox serves the spec's zone at dnsAddr (default: 127.0.0.1 at a
// free port) and its MX hosts at port (0: a free one).
func startSandbox(spec *sandboxspec.Spec, dnsAddr string, port uint16) (*sandbox, error) {
	sb := &sandbox{}
	var err error
	if dnsAddr == "" {
		sb.dns, err = smtptest.StartDNS(spec.Zone)
	} else {
		sb.dns, err = smtptest.StartDNSAt(dnsAddr, spec.Zone)
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
		err = sb.serve(spec.Listeners)
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
func (sb *sandbox) serve(listeners []sandboxspec.Listener) error {
	var err error
	for _, l := range listeners {
		addr := netip.AddrPortFrom(l.IP, sb.port).String()
		if l.Closed {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err != nil {
				err = fmt.Errorf("%s should refuse connections, but: %w", addr, err)
				break
			}
			ln.Close()
			continue
		}
		var srv *smtptest.SMTPServer
		if srv, err = smtptest.StartSMTP(addr, l.Behavior); err != nil {
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
func (sb *sandbox) writeConfig(spec *sandboxspec.Spec, path string) (string, func() error, error) {
	data, err := spec.Config(sb.dns.Addr, sb.port)
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
