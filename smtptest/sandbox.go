// Package smtptest is a mail sandbox for integration tests: an authoritative
// DNS server serving a zone built in Go (with per-name faults), and SMTP
// servers with chosen behaviours (accept, 554, slow, silent, not SMTP,
// blackholed, closed) on loopback addresses of your choice. 127.0.0.0/8 is
// all local on Linux, so every MX host can have its own address while all
// listen on one port: point the code under test at that port instead of 25.
package smtptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// Sandbox is a DNS server and any number of SMTP servers sharing one port.
type Sandbox struct {
	Zone *Zone
	DNS  *DNSServer
	// Port is the SMTP port of every server in the sandbox.
	Port uint16

	mu      sync.Mutex
	servers []*SMTPServer
	conns   connStats
}

// NewSandbox starts a DNS server for an empty zone and picks an SMTP port.
func NewSandbox() (*Sandbox, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	zone := NewZone()
	srv, err := StartDNS(zone)
	if err != nil {
		return nil, err
	}
	return &Sandbox{Zone: zone, DNS: srv, Port: port}, nil
}

// freePort picks a port below the Linux ephemeral range (32768-60999), so
// that outgoing connections do not take it from a later listener.
func freePort() (uint16, error) {
	for try := 0; try < 50; try++ {
		port := uint16(20000 + rand.IntN(12000))
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("smtptest: no free port found")
}

// Serve starts an SMTP server with behavior b on ip at the sandbox port.
func (s *Sandbox) Serve(ip string, b Behavior) (*SMTPServer, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("smtptest: %w", err)
	}
	srv, err := startSMTP(netip.AddrPortFrom(addr, s.Port).String(), b, &s.conns)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	return srv, nil
}

// Connections is the number of connections the sandbox's SMTP servers accepted.
func (s *Sandbox) Connections() int { return int(s.conns.total.Load()) }

// PeakConnections is the most connections open at once across all the
// sandbox's SMTP servers: what a cap on concurrent probes must keep low.
func (s *Sandbox) PeakConnections() int { return int(s.conns.peak.Load()) }

// Closed makes sure nothing listens on ip at the sandbox port, so that
// connections there are refused. It fails if something does.
func (s *Sandbox) Closed(ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("smtptest: %w", err)
	}
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, s.Port).String())
	if err != nil {
		return fmt.Errorf("smtptest: %s port %d is not closed: %w", ip, s.Port, err)
	}
	return l.Close()
}

// Close stops every server of the sandbox.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.DNS.Close()
	for _, srv := range s.servers {
		err = errors.Join(err, srv.Close())
	}
	return err
}
