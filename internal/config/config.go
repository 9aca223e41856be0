// Package config loads mxguard's YAML configuration strictly: unknown keys,
// duplicate keys and bad values are errors that name the file and line.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/configs"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/sharedcache"
	"github.com/mxguard/mxguard/policy"
)

// Config is the whole configuration file.
type Config struct {
	Milter          Milter        `yaml:"milter"`
	PolicyService   PolicyService `yaml:"policy_service"`
	Metrics         Metrics       `yaml:"metrics"`
	API             API           `yaml:"api"`
	DecisionTimeout Duration      `yaml:"decision_timeout"`
	Header          Header        `yaml:"header"`
	Checks          Checks        `yaml:"checks"`
	Resolver        Resolver      `yaml:"resolver"`
	Probe           Probe         `yaml:"probe"`
	Cache           Cache         `yaml:"cache"`
	Outbound        Outbound      `yaml:"outbound"`
	Identity        Identity      `yaml:"identity"`
	Policy          Policy        `yaml:"policy"`
	Inventory       Inventory     `yaml:"inventory"`
	Notify          Notify        `yaml:"notify"`
	Log             Log           `yaml:"log"`

	// Source is the file the configuration came from.
	Source string `yaml:"-"`
	lines  map[string]int
}

// Milter is the milter listener.
type Milter struct {
	Listen      Socket   `yaml:"listen"`
	SocketMode  FileMode `yaml:"socket_mode"`
	MaxSessions int      `yaml:"max_sessions"`
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TransactionTimeout bounds one transaction, MAIL FROM to end of message.
	TransactionTimeout Duration      `yaml:"transaction_timeout"`
	DrainTimeout       Duration      `yaml:"drain_timeout"`
	ReplyAt            ReplyAt       `yaml:"reply_at"`
	NonSMTPAction      NonSMTPAction `yaml:"non_smtp_action"`
	// AllowUsers are the local users or groups that may hold a session;
	// empty is anyone.
	AllowUsers []string `yaml:"allow_users"`
}

// Mode is policy.mode: enforce or report.
type Mode string

func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	return oneOf(n, (*string)(m), "enforce", "report")
}

// NonSMTPAction is what a defer or reject verdict becomes for mail that did
// not come over SMTP: hold, flag or reject.
type NonSMTPAction string

func (a *NonSMTPAction) UnmarshalYAML(n *yaml.Node) error {
	return oneOf(n, (*string)(a), "hold", "flag", "reject")
}

// Verdict is the action as the milter applies it.
func (a NonSMTPAction) Verdict() policy.Verdict {
	v, _ := policy.ParseAction(string(a)) // validated when loaded
	return v
}

// PolicyService is the Postfix policy delegation listener.
type PolicyService struct {
	Listen         Socket   `yaml:"listen"`
	MaxConnections int      `yaml:"max_connections"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	AllowUsers     []string `yaml:"allow_users"`
}

// Metrics is the HTTP listener for /metrics and /healthz.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// API is the HTTP check API for hosting control panels.
type API struct {
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer TOKEN".
	Token string `yaml:"token"`
	// Rate is the requests per second allowed to each client.
	Rate           float64 `yaml:"rate"`
	MaxConcurrency int     `yaml:"max_concurrency"`
}

// Header names the header added to messages.
type Header struct {
	Name string `yaml:"name"`
}

// Checks switches optional subjects on.
type Checks struct {
	HeaderFrom bool `yaml:"header_from"`
	// Message turns the milter's body stage and the message checks on.
	Message         bool     `yaml:"message"`
	MessageMaxBytes int64    `yaml:"message_max_bytes"`
	BulkHeaders     []string `yaml:"bulk_headers"`
	// DomainBlocklists are the zones domain.blocklist asks; none by default.
	DomainBlocklists []BlocklistZone `yaml:"domain_blocklists"`
}

// Resolver configures the DNS client.
type Resolver struct {
	Servers       []string `yaml:"servers"`
	Timeout       Duration `yaml:"timeout"`
	Attempts      int      `yaml:"attempts"`
	MaxCNAMEDepth int      `yaml:"max_cname_depth"`
	EDNSUDPSize   uint16   `yaml:"edns_udp_size"`
}

// Probe configures the port-25 prober.
type Probe struct {
	Port            uint16   `yaml:"port"`
	ConnectTimeout  Duration `yaml:"connect_timeout"`
	GreetingTimeout Duration `yaml:"greeting_timeout"`
	Concurrency     int      `yaml:"concurrency"`
	MaxQueued       int      `yaml:"max_queued"`
	QueueTimeout    Duration `yaml:"queue_timeout"`
	MaxHosts        int      `yaml:"max_hosts"`
	MaxAddrsPerHost int      `yaml:"max_addrs_per_host"`
	AllowNetworks   []Prefix `yaml:"allow_networks"`
	BlockedAfter    int      `yaml:"blocked_after"`
}

// Cache sizes and lifetimes.
type Cache struct {
	DNSEntries      int      `yaml:"dns_entries"`
	DNSMaxBytes     int      `yaml:"dns_max_bytes"`
	ProbeEntries    int      `yaml:"probe_entries"`
	MinTTL          Duration `yaml:"min_ttl"`
	MaxTTL          Duration `yaml:"max_ttl"`
	NegativeTTL     Duration `yaml:"negative_ttl"`
	NegativeMaxTTL  Duration `yaml:"negative_max_ttl"`
	ErrorTTL        Duration `yaml:"error_ttl"`
	ProbeAcceptTTL  Duration `yaml:"probe_accept_ttl"`
	ProbeRefusedTTL Duration `yaml:"probe_refused_ttl"`
	ProbeTimeoutTTL Duration `yaml:"probe_timeout_ttl"`
	Prefetch        bool     `yaml:"prefetch"`
	Shared          Shared   `yaml:"shared"`
}

// Shared is the fleet cache on Redis or Valkey.
type Shared struct {
	// URL is redis://[user:password@]host:port/db, rediss://... or
	// unix://[user:password@]/path; empty is off.
	URL     string   `yaml:"url"`
	Prefix  string   `yaml:"prefix"`
	Timeout Duration `yaml:"timeout"`
	// Key, when set, signs the values and refuses those not signed with
	// it; a secret, never logged.
	Key string `yaml:"key"`
}

// Outbound describes the relay's own egress: its addresses and HELO name.
type Outbound struct {
	IPs []Prefix `yaml:"ips"`
	// HELO is the name the relay greets with; empty means the host's name.
	HELO              string   `yaml:"helo"`
	SelfCheckInterval Duration `yaml:"self_check_interval"`
	// DNSBLZones are the blocklists the self-check looks the outbound
	// addresses up in; none by default.
	DNSBLZones []BlocklistZone `yaml:"dnsbl_zones"`
}

// Identity configures the sending-host checks.
type Identity struct {
	SkipNetworks       []Prefix `yaml:"skip_networks"`
	MaxPTRNames        int      `yaml:"max_ptr_names"`
	CheckAuthenticated bool     `yaml:"check_authenticated"`
}

// Policy maps check results to actions.
type Policy struct {
	Actions       Actions     `yaml:"actions"`
	OnTempError   OnTempError `yaml:"on_temperror"`
	Mode          Mode        `yaml:"mode"`
	AllowDomains  []Domain    `yaml:"allow_domains"`
	AllowNetworks []Prefix    `yaml:"allow_networks"`
	AllowMXHosts  []Domain    `yaml:"allow_mx_hosts"`
}

// Inventory is the domain inventory.
type Inventory struct {
	// Path is the file it is kept in; empty keeps it in memory only.
	Path         string   `yaml:"path"`
	MaxDomains   int      `yaml:"max_domains"`
	MaxBytes     int      `yaml:"max_bytes"`
	SaveInterval Duration `yaml:"save_interval"`
	// AuditInterval, when not zero, makes serve audit the inventory.
	AuditInterval    Duration `yaml:"audit_interval"`
	AuditConcurrency int      `yaml:"audit_concurrency"`
}

// Notify sends verdict changes somewhere.
type Notify struct {
	Webhook Webhook `yaml:"webhook"`
}

// Webhook is an HTTP endpoint that gets a signed POST per verdict change.
type Webhook struct {
	URL          string   `yaml:"url"`
	Secret       string   `yaml:"secret"`
	AllowPrivate bool     `yaml:"allow_private"`
	Timeout      Duration `yaml:"timeout"`
	Retries      int      `yaml:"retries"`
}

// Log configures log/slog.
type Log struct {
	Level  LogLevel  `yaml:"level"`
	Format LogFormat `yaml:"format"`
}

// Default returns the embedded configs/mxguard.yaml.
func Default() *Config {
	c, err := parseOnto(&Config{}, "(built-in default)", configs.Default)
	if err != nil {
		panic("the embedded default configuration is invalid: " + err.Error())
	}
	return c
}

// Load reads a configuration file; keys it leaves out keep their defaults.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("cannot read %s: %v", path, pe.Err)
		}
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses configuration text named name (for error messages).
func Parse(name string, data []byte) (*Config, error) {
	return parseOnto(Default(), name, data)
}

func parseOnto(c *Config, name string, data []byte) (*Config, error) {
	c.Source = name
	c.lines = map[string]int{}
	root, err := ReadDocument(name, data, "the configuration")
	if err != nil {
		return nil, err
	}
	if root != nil {
		d := decoder{w: Walker{File: name, Dotted: true}, lines: c.lines}
		if err := d.decode(root, c, ""); err != nil {
			return nil, err
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Exposed says whether the API listens beyond loopback (or on a host name
// that may resolve beyond it).
func (a API) Exposed() bool {
	host, _, err := net.SplitHostPort(a.Listen)
	if a.Listen == "" || err != nil || host == "localhost" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.Unmap().IsLoopback()
}

// validateAPI checks the api keys. Off the loopback interface the API
// needs a token: it answers for the relay's caches and resolvers.
func (c *Config) validateAPI() []error {
	var errs []error
	a := c.API
	if a.Rate <= 0 || math.IsInf(a.Rate, 0) || math.IsNaN(a.Rate) {
		errs = append(errs, c.errorAt("api.rate", "must be a positive number of requests per second"))
	}
	if a.MaxConcurrency <= 0 {
		errs = append(errs, c.errorAt("api.max_concurrency", "must be a positive number, got %d", a.MaxConcurrency))
	}
	for _, r := range a.Token {
		if r <= ' ' || r >= 0x7f {
			errs = append(errs, c.errorAt("api.token", "must be printable ASCII without spaces (RFC 6750 token)"))
			break
		}
	}
	if a.Listen == "" {
		return errs
	}
	if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		return append(errs, c.errorAt("api.listen", "want HOST:PORT: %v", err))
	}
	if a.Exposed() && a.Token == "" {
		errs = append(errs, c.errorAt("api.listen", "%s is not a loopback address: set api.token, so that only your control panel can ask", a.Listen))
	}
	return errs
}

// errorAt formats an error for a key, with the line it was set on when the
// file set it.
func (c *Config) errorAt(key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line, ok := c.lines[key]; ok {
		return fmt.Errorf("%s:%d: %s: %s", c.Source, line, key, msg)
	}
	return fmt.Errorf("%s: %s: %s", c.Source, key, msg)
}

func (c *Config) validate() error {
	var errs []error
	positive := func(key string, v int) {
		if v <= 0 {
			errs = append(errs, c.errorAt(key, "must be a positive number, got %d", v))
		}
	}
	nonZero := func(key string, d Duration) {
		if d.D <= 0 {
			errs = append(errs, c.errorAt(key, "must be a positive duration"))
		}
	}
	if c.Milter.Listen.Spec == "" && c.PolicyService.Listen.Spec == "" {
		errs = append(errs, c.errorAt("milter.listen", "nothing to serve: set milter.listen, policy_service.listen or both"))
	}
	positive("policy_service.max_connections", c.PolicyService.MaxConnections)
	nonZero("policy_service.idle_timeout", c.PolicyService.IdleTimeout)
	if _, err := peers.ParseAllow(c.Milter.AllowUsers); err != nil {
		errs = append(errs, c.errorAt("milter.allow_users", "%v", err))
	}
	if _, err := peers.ParseAllow(c.PolicyService.AllowUsers); err != nil {
		errs = append(errs, c.errorAt("policy_service.allow_users", "%v", err))
	}
	positive("milter.max_sessions", c.Milter.MaxSessions)
	nonZero("milter.idle_timeout", c.Milter.IdleTimeout)
	nonZero("milter.transaction_timeout", c.Milter.TransactionTimeout)
	nonZero("milter.drain_timeout", c.Milter.DrainTimeout)
	nonZero("decision_timeout", c.DecisionTimeout)
	if !validHeaderName(c.Header.Name) {
		errs = append(errs, c.errorAt("header.name", "%q is not a valid header field name", c.Header.Name))
	}
	if c.Checks.MessageMaxBytes < 64<<10 {
		errs = append(errs, c.errorAt("checks.message_max_bytes", "must be at least 65536 (64 KiB), got %d", c.Checks.MessageMaxBytes))
	}
	for _, h := range c.Checks.BulkHeaders {
		if !validHeaderName(h) {
			errs = append(errs, c.errorAt("checks.bulk_headers", "%q is not a valid header field name", h))
		}
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			errs = append(errs, c.errorAt("metrics.listen", "want HOST:PORT: %v", err))
		}
	}
	errs = append(errs, c.validateAPI()...)
	for _, s := range c.Resolver.Servers {
		if !validServer(s) {
			errs = append(errs, c.errorAt("resolver.servers", "%q is not an IP address or IP:port", s))
		}
	}
	nonZero("resolver.timeout", c.Resolver.Timeout)
	positive("resolver.attempts", c.Resolver.Attempts)
	positive("resolver.max_cname_depth", c.Resolver.MaxCNAMEDepth)
	if c.Resolver.EDNSUDPSize < 512 {
		errs = append(errs, c.errorAt("resolver.edns_udp_size", "must be at least 512"))
	}
	if c.Probe.Port == 0 {
		errs = append(errs, c.errorAt("probe.port", "must be 1-65535"))
	}
	nonZero("probe.connect_timeout", c.Probe.ConnectTimeout)
	nonZero("probe.greeting_timeout", c.Probe.GreetingTimeout)
	positive("probe.concurrency", c.Probe.Concurrency)
	positive("probe.max_queued", c.Probe.MaxQueued)
	nonZero("probe.queue_timeout", c.Probe.QueueTimeout)
	positive("probe.max_hosts", c.Probe.MaxHosts)
	positive("probe.max_addrs_per_host", c.Probe.MaxAddrsPerHost)
	positive("probe.blocked_after", c.Probe.BlockedAfter)
	positive("cache.dns_entries", c.Cache.DNSEntries)
	if c.Cache.DNSMaxBytes < 1<<20 {
		errs = append(errs, c.errorAt("cache.dns_max_bytes", "must be at least 1048576 (1 MiB), got %d", c.Cache.DNSMaxBytes))
	}
	positive("cache.probe_entries", c.Cache.ProbeEntries)
	for key, d := range map[string]Duration{
		"cache.min_ttl": c.Cache.MinTTL, "cache.max_ttl": c.Cache.MaxTTL,
		"cache.negative_ttl": c.Cache.NegativeTTL, "cache.negative_max_ttl": c.Cache.NegativeMaxTTL,
		"cache.error_ttl":        c.Cache.ErrorTTL,
		"cache.probe_accept_ttl": c.Cache.ProbeAcceptTTL, "cache.probe_refused_ttl": c.Cache.ProbeRefusedTTL,
		"cache.probe_timeout_ttl": c.Cache.ProbeTimeoutTTL,
	} {
		nonZero(key, d)
	}
	if s := c.Cache.Shared; s.URL != "" {
		if _, err := sharedcache.ParseURL(s.URL); err != nil {
			errs = append(errs, c.errorAt("cache.shared.url", "%v", err))
		}
		if s.Prefix == "" {
			errs = append(errs, c.errorAt("cache.shared.prefix", "must not be empty: the fleet's keys need their own namespace"))
		}
		nonZero("cache.shared.timeout", s.Timeout)
	}
	if c.Cache.MaxTTL.D < c.Cache.MinTTL.D {
		errs = append(errs, c.errorAt("cache.max_ttl", "is below cache.min_ttl"))
	}
	if c.Cache.NegativeMaxTTL.D < c.Cache.MinTTL.D {
		errs = append(errs, c.errorAt("cache.negative_max_ttl", "is below cache.min_ttl"))
	}
	positive("identity.max_ptr_names", c.Identity.MaxPTRNames)
	positive("inventory.max_domains", c.Inventory.MaxDomains)
	if c.Inventory.MaxBytes < 1<<20 {
		errs = append(errs, c.errorAt("inventory.max_bytes", "must be at least 1048576 (1 MiB), got %d", c.Inventory.MaxBytes))
	}
	nonZero("inventory.save_interval", c.Inventory.SaveInterval)
	positive("inventory.audit_concurrency", c.Inventory.AuditConcurrency)
	if p := c.Inventory.Path; p != "" && !filepath.IsAbs(p) {
		errs = append(errs, c.errorAt("inventory.path", "%q must be an absolute path", p))
	}
	if w := c.Notify.Webhook; w.URL != "" {
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, c.errorAt("notify.webhook.url", "%q: want an https:// (or http://) URL", w.URL))
		}
		nonZero("notify.webhook.timeout", w.Timeout)
		if w.Retries < 0 {
			errs = append(errs, c.errorAt("notify.webhook.retries", "must not be negative"))
		}
	}
	nonZero("outbound.self_check_interval", c.Outbound.SelfCheckInterval)
	errs = append(errs, c.uniqueZones("outbound.dnsbl_zones", c.Outbound.DNSBLZones)...)
	errs = append(errs, c.uniqueZones("checks.domain_blocklists", c.Checks.DomainBlocklists)...)
	if c.Outbound.HELO != "" {
		if _, err := policy.ParseHELO(c.Outbound.HELO); err != nil {
			errs = append(errs, c.errorAt("outbound.helo", "%v", err))
		}
	}
	return errors.Join(errs...)
}

func validServer(s string) bool {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return false
		}
		host = h
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ { // RFC 5322 section 3.6.8: printable ASCII except ':'
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

// Engine returns the policy engine's part of the configuration.
func (c *Config) Engine() policy.Config {
	actions := policy.DefaultActions()
	for id, v := range c.Policy.Actions {
		actions[id] = v
	}
	return policy.Config{
		Resolver: policy.ResolverConfig{
			Servers:       c.Resolver.Servers,
			Timeout:       c.Resolver.Timeout.D,
			Attempts:      c.Resolver.Attempts,
			MaxCNAMEDepth: c.Resolver.MaxCNAMEDepth,
			UDPSize:       c.Resolver.EDNSUDPSize,
		},
		Probe: policy.ProbeConfig{
			Port:            c.Probe.Port,
			ConnectTimeout:  c.Probe.ConnectTimeout.D,
			GreetingTimeout: c.Probe.GreetingTimeout.D,
			AllowNetworks:   prefixes(c.Probe.AllowNetworks),
			Concurrency:     c.Probe.Concurrency,
			MaxQueued:       c.Probe.MaxQueued,
			QueueTimeout:    c.Probe.QueueTimeout.D,
			MaxHosts:        c.Probe.MaxHosts,
			MaxAddrsPerHost: c.Probe.MaxAddrsPerHost,
			BlockedAfter:    c.Probe.BlockedAfter,
		},
		Cache: policy.CacheConfig{
			DNSEntries:      c.Cache.DNSEntries,
			DNSMaxBytes:     c.Cache.DNSMaxBytes,
			ProbeEntries:    c.Cache.ProbeEntries,
			MinTTL:          c.Cache.MinTTL.D,
			MaxTTL:          c.Cache.MaxTTL.D,
			NegativeTTL:     c.Cache.NegativeTTL.D,
			NegativeMaxTTL:  c.Cache.NegativeMaxTTL.D,
			ErrorTTL:        c.Cache.ErrorTTL.D,
			ProbeAcceptTTL:  c.Cache.ProbeAcceptTTL.D,
			ProbeRefusedTTL: c.Cache.ProbeRefusedTTL.D,
			ProbeTimeoutTTL: c.Cache.ProbeTimeoutTTL.D,
			Prefetch:        c.Cache.Prefetch,
		},
		OutboundIPs:          prefixes(c.Outbound.IPs),
		EgressHELO:           c.Outbound.HELO,
		DNSBLZones:           blocklistZones(c.Outbound.DNSBLZones),
		DomainBlocklists:     blocklistZones(c.Checks.DomainBlocklists),
		SharedPrefix:         c.Cache.Shared.Prefix,
		SharedKey:            c.Cache.Shared.Key,
		SkipIdentityNetworks: prefixes(c.Identity.SkipNetworks),
		Policy: policy.Policy{
			Actions:       actions,
			OnTempError:   c.Policy.OnTempError.V,
			AllowDomains:  domains(c.Policy.AllowDomains),
			AllowNetworks: prefixes(c.Policy.AllowNetworks),
			AllowMXHosts:  domains(c.Policy.AllowMXHosts),
			ReportOnly:    c.Policy.Mode == "report",
		},
		Message:            policy.MessageConfig{MaxBytes: c.Checks.MessageMaxBytes, BulkHeaders: c.Checks.BulkHeaders},
		MaxPTRNames:        c.Identity.MaxPTRNames,
		CheckAuthenticated: c.Identity.CheckAuthenticated,
	}
}

func prefixes(ps []Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.P
	}
	return out
}

func domains(ds []Domain) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d)
	}
	return out
}
