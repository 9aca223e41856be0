package policy

import "net/netip"

// specialBlock is one entry of the IANA special-purpose address registries
// (RFC 6890 and later updates) that mail must never be delivered to.
type specialBlock struct {
	prefix netip.Prefix
	name   string
}

var specialBlocks = func() []specialBlock {
	entries := []struct{ cidr, name string }{
		// IPv4
		{"0.0.0.0/8", "this network (RFC 791)"},
		{"10.0.0.0/8", "private-use (RFC 1918)"},
		{"100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"},
		{"127.0.0.0/8", "loopback (RFC 1122)"},
		{"169.254.0.0/16", "link-local (RFC 3927)"},
		{"172.16.0.0/12", "private-use (RFC 1918)"},
		{"192.0.0.0/24", "IETF protocol assignments (RFC 6890)"},
		{"192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"},
		{"192.31.196.0/24", "AS112 (RFC 7535)"},
		{"192.52.193.0/24", "AMT (RFC 7450)"},
		{"192.88.99.0/24", "6to4 relay anycast (RFC 7526)"},
		{"192.168.0.0/16", "private-use (RFC 1918)"},
		{"192.175.48.0/24", "AS112 direct delegation (RFC 7534)"},
		{"198.18.0.0/15", "benchmarking (RFC 2544)"},
		{"198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"},
		{"203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"},
		{"224.0.0.0/4", "multicast (RFC 5771)"},
		{"240.0.0.0/4", "reserved (RFC 1112)"},
		// IPv6 (everything outside 2000::/3 is caught below)
		{"::1/128", "loopback (RFC 4291)"},
		{"::/128", "unspecified (RFC 4291)"},
		{"::ffff:0:0/96", "IPv4-mapped (RFC 4291)"},
		{"64:ff9b::/96", "NAT64 well-known prefix (RFC 6052)"},
		{"64:ff9b:1::/48", "NAT64 local-use (RFC 8215)"},
		{"100::/64", "discard-only (RFC 6666)"},
		{"2001::/23", "IETF protocol assignments (RFC 2928)"},
		{"2001:db8::/32", "documentation (RFC 3849)"},
		{"2002::/16", "6to4 (RFC 3056)"},
		{"3fff::/20", "documentation (RFC 9637)"},
		{"5f00::/16", "SRv6 SIDs (RFC 9602)"},
		{"fc00::/7", "unique-local / ULA (RFC 4193)"},
		{"fe80::/10", "link-local (RFC 4291)"},
		{"ff00::/8", "multicast (RFC 4291)"},
	}
	blocks := make([]specialBlock, len(entries))
	for i, e := range entries {
		blocks[i] = specialBlock{netip.MustParsePrefix(e.cidr), e.name}
	}
	return blocks
}()

var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// specialPurpose names the special-purpose block ip lies in, or returns "" for
// an ordinary global unicast address. IPv4-mapped IPv6 addresses are judged
// as what they are on the wire: IPv6, hence special.
func specialPurpose(ip netip.Addr) string {
	for _, b := range specialBlocks {
		if b.prefix.Contains(ip) {
			return b.name
		}
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return "reserved IPv6 (outside 2000::/3, RFC 4291)"
	}
	if !ip.IsValid() {
		return "invalid address"
	}
	return ""
}

// inPrefixes reports whether ip (unmapped) lies in one of prefixes.
func inPrefixes(ip netip.Addr, prefixes []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
