package policy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/smtptest"
)

// TestRFC7208Suite runs every test of the public RFC 7208 test suite
// (rfc7208-tests.yml, as the SPF module ships it) that has a MAIL FROM
// identity through spf.relay, as receivers would judge this relay's mail:
// the test's zone served by the sandbox DNS server and read through the
// engine's caching resolver, its host the one outbound address, its HELO
// outbound.helo. spf.relay must name the suite's result, for every test.
func TestRFC7208Suite(t *testing.T) {
	total := 0
	t.Run("suite", func(t *testing.T) {
		for _, s := range readSPFSuite(t) {
			srv, err := smtptest.StartDNS(s.zone(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			for name, tc := range s.Tests {
				if tc.MailFrom == "" {
					continue // the HELO identity alone, which spf.relay does not judge
				}
				total++
				t.Run(name, func(t *testing.T) {
					t.Parallel() // a TIMEOUT costs a resolver timeout
					if got, detail := spfSuiteResult(t, srv.Addr, tc); !slices.Contains(tc.Result, got) {
						t.Errorf("%s (section %s): got %s, the suite %v; %s", s.Description, strings.Join(tc.Spec, ", "), got, tc.Result, detail)
					}
				})
			}
		}
	})
	if total < 200 { // the suite's 2014.04 release has 200
		t.Errorf("only %d tests with a MAIL FROM identity", total)
	}
}

// spfSuiteResult runs spf.relay for one test and returns the SPF result its
// detail names: "none" where it says receivers get none for a sender domain
// domain.syntax fails.
func spfSuiteResult(t *testing.T, server string, tc spfSuiteTest) (result, detail string) {
	r := spfRelayOf(spfEngine(t, server, tc.Host, tc.HELO), Request{Sender: tc.MailFrom})
	if r.Status == StatusSkip {
		if strings.Contains(r.Detail, "receivers' SPF gives none") {
			return "none", r.Detail
		}
		return "skip", r.Detail
	}
	// "DOMAIN SPF: IP RESULT[: error]"
	_, after, _ := strings.Cut(r.Detail, " SPF: ")
	if f := strings.Fields(after); len(f) >= 2 {
		return strings.TrimSuffix(f[1], ":"), r.Detail
	}
	return "?", r.Detail
}

type spfSuite struct {
	Description string
	Tests       map[string]spfSuiteTest
	ZoneData    map[string][]map[string]yaml.Node `yaml:"zonedata"`
}

type spfSuiteTest struct {
	Spec     yamlList
	HELO     string `yaml:"helo"`
	Host     string
	MailFrom string `yaml:"mailfrom"`
	Result   yamlList
}

// yamlList is a scalar or a sequence of scalars.
type yamlList []string

func (l *yamlList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = []string{n.Value}
		return nil
	}
	var s []string
	err := n.Decode(&s)
	*l = s
	return err
}

func readSPFSuite(t *testing.T) []spfSuite {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "blitiri.com.ar/go/spf").Output()
	if err != nil {
		t.Fatalf("finding the SPF module: %v", err)
	}
	f, err := os.Open(strings.TrimSpace(string(out)) + "/testdata/rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var suites []spfSuite
	for dec := yaml.NewDecoder(f); ; {
		var s spfSuite
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			return suites
		} else if err != nil {
			t.Fatal(err)
		}
		suites = append(suites, s)
	}
}

// The types an SPF evaluation asks for: a TIMEOUT stalls those its name's
// list does not give before it.
var spfSuiteTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypePTR, dns.TypeTXT, dns.TypeSPF}

// zone builds the suite's zone by its own convention: a name with SPF
// (type 99) records and no TXT entry serves them as TXT too, "NONE" is no
// record, and TIMEOUT stalls every type not given before it.
func (s spfSuite) zone(t *testing.T) *smtptest.Zone {
	t.Helper()
	z := smtptest.NewZone()
	for name, entries := range s.ZoneData {
		owner := escapeOwner(name)
		hdr := func(rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: smtptest.DefaultTTL}
		}
		var spf [][]string
		hasTXT := slices.ContainsFunc(entries, func(e map[string]yaml.Node) bool { _, ok := e["TXT"]; return ok })
		given := map[uint16]bool{}
		timeout := false
	entries:
		for _, entry := range entries {
			for key, v := range entry {
				var rrs []dns.RR
				switch key {
				case "A", "AAAA", "PTR", "CNAME":
					var vals yamlList
					if err := v.Decode(&vals); err != nil {
						t.Fatal(err)
					}
					for _, val := range vals {
						rr, err := dns.NewRR(fmt.Sprintf("%s %s %s", owner, key, val))
						if err != nil {
							t.Fatalf("%s %s %s: %v", name, key, val, err)
						}
						rrs = append(rrs, rr)
					}
				case "MX":
					var mx struct {
						Pref uint16
						Host string
					}
					var pair []yaml.Node
					if err := v.Decode(&pair); err != nil || len(pair) != 2 || pair[0].Decode(&mx.Pref) != nil || pair[1].Decode(&mx.Host) != nil {
						t.Fatalf("%s: MX %v", name, v.Value)
					}
					rrs = append(rrs, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: mx.Pref, Mx: escapeOwner(mx.Host)})
				case "SPF", "TXT":
					var strs yamlList
					if err := v.Decode(&strs); err != nil {
						t.Fatal(err)
					}
					if len(strs) == 1 && strs[0] == "NONE" {
						continue
					}
					strs = txtStrings(strs)
					if key == "SPF" {
						rrs = append(rrs, &dns.SPF{Hdr: hdr(dns.TypeSPF), Txt: strs})
						spf = append(spf, strs)
					} else {
						rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: strs})
					}
				case "CNAMELOOP": // the suite's comment: a name that is its own CNAME
					rrs = append(rrs, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: owner})
				case "TIMEOUT":
					timeout = true
					break entries // nothing after it is answered
				default:
					t.Fatalf("%s: unknown zone entry %s", name, key)
				}
				for _, rr := range rrs {
					given[rr.Header().Rrtype] = true
				}
				z.AddRR(rrs...)
			}
		}
		if !hasTXT { // after TIMEOUT, if there is one: stalled as well
			for _, strs := range spf {
				z.AddRR(&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: strs})
			}
		}
		if timeout {
			for _, qtype := range spfSuiteTypes {
				if !given[qtype] {
					z.SetTypeFault(owner, qtype, smtptest.Drop)
				}
			}
		}
	}
	return z
}

// escapeOwner writes a suite name in presentation format: octets other
// than letters, digits, '-' and '_' as \DDD.
func escapeOwner(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\%03d", c)
		}
	}
	return dns.Fqdn(b.String())
}

// txtStrings writes TXT character-strings as miekg/dns keeps them, with a
// backslash escaped.
func txtStrings(strs []string) []string {
	out := make([]string, len(strs))
	for i, s := range strs {
		out[i] = strings.ReplaceAll(s, `\`, `\\`)
	}
	return out
}
