package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSender(t *testing.T) {
	cases := []struct {
		in, domain string
		null       bool
		err        string
	}{
		{"<user@example.com>", "example.com", false, ""},
		{"user@Example.COM.", "example.com", false, ""},
		{" <USER@EXAMPLE.com> ", "example.com", false, ""},
		{"<>", "", true, ""},
		{"< >", "", true, ""},
		{"<@relay.example:user@example.com>", "example.com", false, ""},
		{`"a@b"@example.com`, "example.com", false, ""},
		{`"a\"@b"@example.org`, "example.org", false, ""},
		{"user@bücher.example", "xn--bcher-kva.example", false, ""},
		{"user@BÜCHER.example", "xn--bcher-kva.example", false, ""},
		{"user@xn--bcher-kva.example", "xn--bcher-kva.example", false, ""},
		{"user@例え.テスト", "xn--r8jz45g.xn--zckzah", false, ""},
		{"user@[192.0.2.1]", "[192.0.2.1]", false, "address literal"},
		{"user@[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", false, "address literal"},
		{"user@192.0.2.1", "192.0.2.1", false, "bare IP"},
		{"user@", "", false, "empty domain"},
		{"", "", true, ""},
		{"user@exa_mple.com", "exa_mple.com", false, "not a valid domain"},
		{"user@-example.com", "-example.com", false, "not a valid domain"},
		{"user@example..com", "example..com", false, "not a valid domain"},
		{"user@example.123", "example.123", false, "all-numeric"},
		{"user@" + strings.Repeat("a", 64) + ".com", strings.Repeat("a", 64) + ".com", false, "not a valid domain"},
		{"user@" + strings.Repeat("abcdefghi.", 26) + "com", strings.Repeat("abcdefghi.", 26) + "com", false, "octets long"},
		{"user@xn--zz.example", "xn--zz.example", false, "not a valid domain"},
		{"user@ex ample.com", "ex ample.com", false, "not a valid domain"},
	}
	for _, c := range cases {
		s := ParseSender(c.in)
		if s.Domain != c.domain || s.Null != c.null || (s.Err == nil) != (c.err == "") ||
			s.Err != nil && !strings.Contains(s.Err.Error(), c.err) {
			t.Errorf("ParseSender(%q) = %+v, want domain %q null %v err %q", c.in, s, c.domain, c.null, c.err)
		}
	}
}

// The local part is kept as sent, for SPF's %{l}.
func TestParseSenderLocalPart(t *testing.T) {
	for in, want := range map[string]string{
		"<User.Name@example.com>":      "User.Name",
		"<@relay.example:a@b.example>": "a",
		`"a@b"@example.com`:            `"a@b"`,
		"@example.com":                 "",
	} {
		if s := ParseSender(in); s.Local != want {
			t.Errorf("ParseSender(%q).Local = %q, want %q", in, s.Local, want)
		}
	}
	if s := ParseDomain("example.com"); s.Local != "" {
		t.Errorf("ParseDomain: local part %q", s.Local)
	}
}

func TestUnqualifiedSenderAndBareDomain(t *testing.T) {
	for _, in := range []string{"postmaster", "<postmaster>", `"a@b"`} {
		if s := ParseSender(in); !s.Unqualified || s.Domain != "" || s.Err != nil {
			t.Errorf("ParseSender(%q) = %+v, want unqualified", in, s)
		}
	}
	if s := ParseDomain(" Example.COM. "); s.Domain != "example.com" || s.Err != nil {
		t.Errorf("ParseDomain = %+v", s)
	}
	if s := ParseDomain("[192.0.2.1]"); s.Err == nil {
		t.Errorf("ParseDomain accepted an address literal: %+v", s)
	}
}

func TestParseHELO(t *testing.T) {
	cases := []struct {
		in, name, literal, err string
	}{
		{"mail.example.com", "mail.example.com", "", ""},
		{"MAIL.Example.COM.", "mail.example.com", "", ""},
		{"[192.0.2.1]", "", "192.0.2.1", ""},
		{"[IPv6:2001:db8::1]", "", "2001:db8::1", ""},
		{"[ipv6:2001:DB8::1]", "", "2001:db8::1", ""},
		{"localhost", "", "", "single label"},
		{"192.0.2.1", "", "", "bare IP"},
		{"2001:db8::1", "", "", "bare IP"},
		{"[2001:db8::1]", "", "", "IPv6 needs the IPv6: tag"},
		{"[IPv6:192.0.2.1]", "", "", "malformed IPv6"},
		{"[IPv6:::ffff:192.0.2.1]", "", "", "malformed IPv6"},
		{"[192.0.2.1", "", "", "malformed"},
		{"[999.0.2.1]", "", "", "malformed"},
		{"mail_host.example.com", "", "", "not a valid domain"},
		{"", "", "", "empty"},
	}
	for _, c := range cases {
		h, err := ParseHELO(c.in)
		lit := ""
		if h.Literal.IsValid() {
			lit = h.Literal.String()
		}
		if h.Name != c.name || lit != c.literal || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseHELO(%q) = %+v, %v; want name %q literal %q err %q", c.in, h, err, c.name, c.literal, c.err)
		}
	}
}

func TestSpecialPurpose(t *testing.T) {
	special := []string{"0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.0.1", "172.31.255.255",
		"192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "224.0.0.1",
		"240.0.0.1", "255.255.255.255", "::", "::1", "::ffff:192.0.2.1", "::ffff:8.8.8.8", "64:ff9b:1::1", "64:ff9b::808:808", "100::1", "2001:db8::1",
		"2001::1", "2002::1", "3fff::1", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1", "1::1", "4000::1"}
	for _, s := range special {
		if specialPurpose(netip.MustParseAddr(s)) == "" {
			t.Errorf("%s should be special-purpose", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "192.0.3.1", "100.128.0.1", "2a00:1450::1", "2606:4700::1111"} {
		if got := specialPurpose(netip.MustParseAddr(s)); got != "" {
			t.Errorf("%s should be global, got %q", s, got)
		}
	}
	if got := specialPurpose(netip.MustParseAddr("169.254.169.254")); !strings.Contains(got, "link-local") {
		t.Errorf("metadata address: %q", got)
	}
}

func TestIsIPLiteralName(t *testing.T) {
	for host, want := range map[string]bool{
		"192.0.2.1": true, "2001:db8::25": true, "fe80::1%eth0": true, "::ffff:192.0.2.1": true, "[192.0.2.1]": true,
		"mx.example": false, "mx1": false, "192.0.2.1.": false, "cafe": false, "": false, "1": false, "192.0.2.1x": false,
	} {
		if got := isIPLiteralName(host); got != want {
			t.Errorf("isIPLiteralName(%q) = %v", host, got)
		}
	}
}
