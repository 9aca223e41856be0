package policy

import (
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Sender is the parsed envelope sender (or a bare domain given to `check`).
type Sender struct {
	// Domain is the normalised domain: lowercase, no trailing dot, A-labels.
	// When Err is set it holds the raw domain part, for display.
	Domain string
	// Null marks the null reverse-path <> (bounces): no domain checks.
	Null bool
	// Unqualified marks an address without a domain ("<postmaster>"): the
	// MTA qualifies it with its own domain, so there is nothing to check.
	Unqualified bool
	// Err says why the domain is not a valid host name.
	Err error
	// Local is the local part as sent ("" for a bare domain), for SPF's
	// %{l} (RFC 7208 section 7.3).
	Local string
}

// ParseSender parses a MAIL FROM argument such as "<user@example.com>",
// "user@Example.COM.", "<@relay:user@example.com>", "<>" or "" (both the
// null sender).
func ParseSender(s string) Sender {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") {
		s = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">"))
	}
	if strings.HasPrefix(s, "@") { // RFC 5321 section 4.1.2 source route: ignore up to ':'
		if i := strings.IndexByte(s, ':'); i >= 0 {
			s = s[i+1:]
		}
	}
	if s == "" {
		return Sender{Null: true}
	}
	i := domainAt(s)
	if i < 0 {
		return Sender{Unqualified: true}
	}
	sender := parseDomain(s[i+1:])
	sender.Local = s[:i]
	return sender
}

// ParseDomain parses a bare domain, as `mxguard check` takes one.
func ParseDomain(s string) Sender {
	return parseDomain(strings.TrimSpace(s))
}

func parseDomain(domain string) Sender {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Sender{Domain: domain, Err: err}
	}
	return Sender{Domain: d}
}

// domainAt finds the "@" that separates the local part from the domain,
// skipping a quoted local part ("a@b"@example.com).
func domainAt(s string) int {
	quoted, escaped := false, false
	at := -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == '@' && !quoted:
			at = i
		}
	}
	return at
}

// NormalizeDomain lowercases a domain, strips one trailing dot, converts IDN
// U-labels to A-labels and checks that the result is a DNS host name: LDH
// labels of 1 to 63 octets, at most 253 octets, not an address literal and not
// a bare IP address.
func NormalizeDomain(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty domain")
	}
	if strings.HasPrefix(s, "[") {
		return "", fmt.Errorf("%q is an address literal, not a domain name", s)
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(s, ".")); err == nil {
		return "", fmt.Errorf("%q is a bare IP address, not a domain name", s)
	}
	s = strings.TrimSuffix(s, ".")
	if !utf8.ValidString(s) { // idna would turn the bad bytes into U+FFFD and carry on
		return "", fmt.Errorf("%q is not valid UTF-8", s)
	}
	ascii, err := hostNames.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid domain name: %v", s, idnaReason(err))
	}
	ascii = strings.ToLower(ascii)
	if err := checkHostName(ascii); err != nil {
		return "", fmt.Errorf("%q is not a valid domain name: %v", s, err)
	}
	return ascii, nil
}

// hostNames is IDNA's lookup profile without its hyphen rule (UTS #46
// CheckHyphens), which would refuse plain LDH labels such as "mx--01":
// only labels starting "xn--" must be valid A-labels, and the decoding
// checks those. Leading and trailing hyphens are checkHostName's to refuse.
var hostNames = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.CheckHyphens(false))

// idnaReason trims the package prefix from idna errors.
func idnaReason(err error) string {
	return strings.TrimPrefix(err.Error(), "idna: ")
}

// checkHostName checks an ASCII name against RFC 1035/1123 host name rules.
func checkHostName(s string) error {
	if len(s) > 253 {
		return fmt.Errorf("%d octets long (max 253)", len(s))
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label of %d octets (max 63)", len(l))
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has the character %q (only letters, digits and '-')", l, c)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", l)
		}
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return fmt.Errorf("top-level label %q is all-numeric", tld)
	}
	return nil
}

// HELO is a parsed HELO/EHLO argument.
type HELO struct {
	// Name is the normalised host name, empty for an address literal.
	Name string
	// Literal is the address of an address literal such as [192.0.2.1] or [IPv6:2001:db8::1].
	Literal netip.Addr
}

// ParseHELO parses a HELO/EHLO argument (RFC 5321 section 4.1.1.1, section 4.1.3). It
// rejects bare IP addresses, single-label names and bad syntax.
func ParseHELO(s string) (HELO, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return HELO{}, errors.New("empty HELO")
	case strings.HasPrefix(s, "["):
		ip, err := parseAddressLiteral(s)
		if err != nil {
			return HELO{}, err
		}
		return HELO{Literal: ip}, nil
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(s, ".")); err == nil {
		return HELO{}, fmt.Errorf("%q is a bare IP address; use a host name or an address literal [%s]", s, s)
	}
	name, err := NormalizeDomain(s)
	if err != nil {
		return HELO{}, err
	}
	if !strings.Contains(name, ".") {
		return HELO{}, fmt.Errorf("%q is a single label, not a fully qualified domain name", s)
	}
	return HELO{Name: name}, nil
}

// ParseClientIP parses a sending host's address as a person names it (the
// CLI's --client-ip, the check API's client_ip): an IP address without a
// zone. An IPv4-mapped address is its IPv4 address, as the milter sees
// such a client on an IPv6 socket.
func ParseClientIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return ip.Unmap(), nil
}

// parseAddressLiteral parses "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 section 4.1.3).
func parseAddressLiteral(s string) (netip.Addr, error) {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return netip.Addr{}, fmt.Errorf("%q: malformed address literal", s)
	}
	inner := s[1 : len(s)-1]
	if v6, ok := cutPrefixFold(inner, "IPv6:"); ok {
		ip, err := netip.ParseAddr(v6)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%q: malformed IPv6 address literal", s)
		}
		return ip, nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("%q: malformed address literal (IPv6 needs the IPv6: tag)", s)
	}
	return ip, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// canonicalName lowercases a DNS name from an answer and strips its trailing dot.
func canonicalName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// ParseAddressList parses an address list header field (RFC 5322 section
// 3.4), as net/mail does, but also takes a fully qualified domain with its
// root dot ("a@example.com."), which is valid in DNS and delivered by MTAs.
func ParseAddressList(value string) ([]*mail.Address, error) {
	list, err := mail.ParseAddressList(value)
	if err != nil {
		list, err = mail.ParseAddressList(rootDots.ReplaceAllString(value, "$1$2"))
	}
	return list, err
}

// rootDots finds the root dot after an address's domain.
var rootDots = regexp.MustCompile(`(@[A-Za-z0-9.-]*[A-Za-z0-9-])\.([\s>,;]|$)`)
