package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// netResolver answers the net.Resolver-shaped questions that libraries ask
// (blitiri.com.ar/go/spf) through the engine's caching resolver, so their
// lookups are cached, collapsed and bounded like the checks' own, and /etc/hosts
// never answers. Errors come back as *net.DNSError, which the libraries read:
// NXDOMAIN, NODATA and a name no query can carry as not found (RFC 7208
// sections 4.3 and 5: receivers treat such a name as non-existent),
// everything else as temporary.
type netResolver struct {
	r *cachedResolver
}

func (n netResolver) lookup(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	a, err := n.r.Lookup(ctx, name, qtype)
	if err != nil {
		var de *dnsError
		msg := err.Error()
		if errors.As(err, &de) && de.Err != nil {
			msg = de.Err.Error()
		}
		if de != nil && de.Kind == errInvalidName {
			return nil, &net.DNSError{Err: msg, Name: name, IsNotFound: true}
		}
		return nil, &net.DNSError{Err: msg, Name: name, IsTemporary: true, IsTimeout: errors.Is(err, context.DeadlineExceeded)}
	}
	if a.Kind != kindFound {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return a, nil
}

func (n netResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := n.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	return a.TXT, nil
}

func (n netResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	a, err := n.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]*net.MX, len(a.MX))
	for i, mx := range a.MX {
		mxs[i] = &net.MX{Host: mx.Host + ".", Pref: mx.Pref}
	}
	return mxs, nil
}

// LookupIPAddr asks for A and AAAA; the name is not found only if neither
// has an answer, and a failure of either is a failure.
func (n netResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var addrs []net.IPAddr
	var notFound error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		a, err := n.lookup(ctx, host, qtype)
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			notFound = err
		case err != nil:
			return nil, err
		default:
			for _, ip := range a.Addrs {
				addrs = append(addrs, net.IPAddr{IP: ip.AsSlice()})
			}
		}
	}
	if len(addrs) == 0 {
		return nil, notFound
	}
	return addrs, nil
}

func (n netResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "not an IP address", Name: addr}
	}
	a, err := n.lookup(ctx, reverseName(ip.Unmap()), dns.TypePTR)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(a.Names))
	for i, name := range a.Names {
		names[i] = name + "."
	}
	return names, nil
}
