package spf

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// checkSyntax returns the first syntax error in an SPF record, if any. A
// syntax error anywhere in the record makes it a permerror, before any of
// its terms is evaluated, so that a match earlier in the record cannot
// hide it.
// https://tools.ietf.org/html/rfc7208#section-4.6
// https://tools.ietf.org/html/rfc7208#section-12
func checkSyntax(txt string) error {
	for i := range len(txt) {
		// Terms are separated by spaces only, and are made of visible
		// 7-bit ASCII characters.
		// https://tools.ietf.org/html/rfc7208#section-4.6.1
		if c := txt[i]; c != ' ' && (c < 0x21 || c > 0x7e) {
			return fmt.Errorf("%w: %q", ErrInvalidChar, c)
		}
	}

	// The first field is the version, which getDNSRecord checked.
	exps, redirects := 0, 0
	for _, field := range strings.Split(txt, " ")[1:] {
		if field == "" {
			continue
		}
		switch {
		case isNamedModifier(field, "redirect"):
			redirects++
		case isNamedModifier(field, "exp"):
			exps++
		}
		if err := checkTerm(field); err != nil {
			return fmt.Errorf("%w: %q", err, field)
		}
	}

	// https://tools.ietf.org/html/rfc7208#section-6
	if exps > 1 || redirects > 1 {
		return ErrDuplicateModifier
	}
	return nil
}

// checkTerm checks one directive or modifier.
func checkTerm(field string) error {
	// https://tools.ietf.org/html/rfc7208#section-6
	if modifierRegexp.MatchString(field) {
		value := field[strings.IndexByte(field, '=')+1:]
		if isNamedModifier(field, "redirect") || isNamedModifier(field, "exp") {
			return checkDomainSpec(value)
		}
		// Unknown modifiers are ignored, but their value must be a valid
		// macro-string.
		_, err := checkMacroString(value, true)
		return err
	}

	// https://tools.ietf.org/html/rfc7208#section-4.6.2
	if strings.IndexByte("+-~?", field[0]) >= 0 {
		field = field[1:]
	}
	name, arg := field, ""
	if i := strings.IndexAny(field, ":/"); i >= 0 {
		name, arg = field[:i], field[i:]
	}
	switch strings.ToLower(name) {
	case "all":
		if arg != "" {
			return ErrUnknownField
		}
		return nil
	case "include", "exists":
		if !strings.HasPrefix(arg, ":") {
			return ErrInvalidDomain
		}
		return checkDomainSpec(arg[1:])
	case "ptr":
		if arg == "" {
			return nil
		}
		if !strings.HasPrefix(arg, ":") {
			return ErrInvalidDomain
		}
		return checkDomainSpec(arg[1:])
	case "a":
		return checkDomainAndMask(aRegexp, field)
	case "mx":
		return checkDomainAndMask(mxRegexp, field)
	case "ip4":
		return checkIPNetwork(arg, true)
	case "ip6":
		return checkIPNetwork(arg, false)
	}
	return ErrUnknownField
}

// checkDomainAndMask checks an "a" or "mx" mechanism: an optional
// domain-spec, then the dual-cidr-length.
// https://tools.ietf.org/html/rfc7208#section-5.3
func checkDomainAndMask(re *regexp.Regexp, field string) error {
	groups := re.FindStringSubmatch(field)
	if groups == nil {
		return ErrInvalidDomain
	}
	if groups[1] != "" {
		if err := checkDomainSpec(groups[2]); err != nil {
			return err
		}
	}
	if !validCIDRLength(groups[4], 32, groups[3] != "") ||
		!validCIDRLength(groups[6], 128, groups[5] != "") {
		return ErrInvalidMask
	}
	return nil
}

// checkIPNetwork checks the ":" ip-network [ cidr-length ] of an "ip4" or
// "ip6" mechanism.
// https://tools.ietf.org/html/rfc7208#section-5.6
func checkIPNetwork(arg string, v4 bool) error {
	if !strings.HasPrefix(arg, ":") {
		return ErrInvalidIP
	}
	network, length, hasLength := strings.Cut(arg[1:], "/")
	ip, err := netip.ParseAddr(network)
	if err != nil || ip.Zone() != "" || ip.Is4() != v4 {
		return ErrInvalidIP
	}
	bits := 128
	if v4 {
		bits = 32
	}
	if !validCIDRLength(length, bits, hasLength) {
		return ErrInvalidMask
	}
	return nil
}

// validCIDRLength reports whether s, the digits of a cidr-length, is a
// number from 0 to max without leading zeros; an absent length is valid.
// https://tools.ietf.org/html/rfc7208#section-5.6
func validCIDRLength(s string, max int, present bool) bool {
	if !present {
		return true
	}
	if s == "" || len(s) > 1 && s[0] == '0' {
		return false
	}
	n := 0
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		if n = n*10 + int(s[i]-'0'); n > max {
			return false
		}
	}
	return true
}

// checkDomainSpec checks a domain-spec: a macro-string that ends in a
// macro-expand or in "." and a toplabel (and an optional trailing dot).
// https://tools.ietf.org/html/rfc7208#section-7.1
func checkDomainSpec(s string) error {
	if s == "" {
		return ErrInvalidDomain
	}
	tail, err := checkMacroString(s, false)
	if err != nil || tail == "" {
		return err
	}
	tail = strings.TrimSuffix(tail, ".")
	dot := strings.LastIndexByte(tail, '.')
	if dot < 0 || !isTopLabel(tail[dot+1:]) {
		return ErrInvalidDomain
	}
	return nil
}

// isTopLabel reports whether s is a toplabel: letters, digits and hyphens,
// neither starting nor ending with a hyphen, and not all digits.
// https://tools.ietf.org/html/rfc7208#section-7.1
func isTopLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	alpha, hyphen := false, false
	for i := range len(s) {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			alpha = true
		case c == '-':
			hyphen = true
		case c < '0' || c > '9':
			return false
		}
	}
	return alpha || hyphen
}

// checkMacroString checks a macro-string, and returns the literal text
// after its last macro-expand. The macro letters c, r and t are allowed only
// in explanation text (and in unknown modifiers, which are never expanded).
// https://tools.ietf.org/html/rfc7208#section-7.1
func checkMacroString(s string, expLetters bool) (tail string, err error) {
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+1 == len(s) {
			return "", ErrInvalidMacro
		}
		switch s[i+1] {
		case '%', '_', '-':
			i++
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", ErrInvalidMacro
			}
			groups := macroRegexp.FindStringSubmatch(s[i+2 : i+end])
			if groups == nil {
				return "", ErrInvalidMacro
			}
			if !expLetters && strings.ContainsAny(groups[1], "crtCRT") {
				return "", ErrInvalidMacro
			}
			if groups[2] != "" {
				if n, err := strconv.Atoi(groups[2]); err != nil || n <= 0 {
					return "", ErrInvalidMacro
				}
			}
			i += end
		default:
			return "", ErrInvalidMacro
		}
		start = i + 1
	}
	return s[start:], nil
}
