package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/configs"
	"github.com/mxguard/mxguard/policy"
)

// The documented file and the engine's built-in defaults must agree.
func TestEmbeddedDefaultMatchesEngineDefaults(t *testing.T) {
	got := Default().Engine()
	want := policy.DefaultConfig()
	got.Clock, want.Clock = nil, nil
	if got.Resolver.Servers == nil {
		got.Resolver.Servers = want.Resolver.Servers
	}
	if !reflect.DeepEqual(normalise(got), normalise(want)) {
		t.Errorf("configs/mxguard.yaml and policy.DefaultConfig differ:\n yaml %+v\n code %+v", got, want)
	}
	d := Default()
	if d.Milter.Listen.Spec != "inet:127.0.0.1:8891" || d.DecisionTimeout.D != 20*time.Second || d.Header.Name != "X-MXGuard" {
		t.Errorf("defaults: listen %q, decision_timeout %v, header %q", d.Milter.Listen, d.DecisionTimeout.D, d.Header.Name)
	}
}

// configs/mxguard.yaml lists every check's default action, in report order:
// the file an operator copies names each check it can tune.
func TestEmbeddedDefaultListsEveryCheck(t *testing.T) {
	d := Default()
	for _, id := range policy.CheckIDs() {
		if v, ok := d.Policy.Actions[id]; !ok || v != policy.DefaultActions()[id] {
			t.Errorf("configs/mxguard.yaml: policy.actions.%s is missing or not the default", id)
		}
	}
	text := string(configs.Default)
	last := -1
	for _, id := range policy.CheckIDs() {
		i := strings.Index(text, "    "+string(id)+":")
		if i < last {
			t.Errorf("configs/mxguard.yaml: policy.actions.%s is out of report order", id)
		}
		last = i
	}
}

// normalise makes empty and nil lists compare equal.
func normalise(c policy.Config) policy.Config {
	for _, l := range []*[]netip.Prefix{&c.Probe.AllowNetworks, &c.OutboundIPs, &c.SkipIdentityNetworks, &c.Policy.AllowNetworks} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	for _, l := range []*[]string{&c.Resolver.Servers, &c.Policy.AllowDomains, &c.Policy.AllowMXHosts, &c.Message.BulkHeaders} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return c
}

// Every key of the configuration is set, hence documented, in configs/mxguard.yaml.
func TestEveryKeyDocumented(t *testing.T) {
	d := Default()
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			key := Walker{Dotted: true}.Key(path, tag)
			if _, ok := d.lines[key]; !ok {
				t.Errorf("key %s is missing from configs/mxguard.yaml", key)
			}
			if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalerType) {
				walk(f.Type, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

func TestOverlayKeepsDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte("policy:\n  actions:\n    mx.port25: flag\nprobe:\n  port: 2525\n  allow_networks: [127.0.0.0/8, 192.0.2.7, \"::ffff:10.0.0.0/104\"]\nresolver:\n  servers:\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Engine()
	if e.Policy.Actions[policy.MXPort25] != policy.Flag || e.Policy.Actions[policy.MXRecords] != policy.Defer {
		t.Errorf("actions %v", e.Policy.Actions)
	}
	if e.Probe.Port != 2525 || e.Probe.GreetingTimeout != 12*time.Second {
		t.Errorf("probe %+v", e.Probe)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("10.0.0.0/8")}; !reflect.DeepEqual(e.Probe.AllowNetworks, want) {
		t.Errorf("allow_networks %v", e.Probe.AllowNetworks)
	}
	if c.lines["probe.port"] != 5 {
		t.Errorf("probe.port recorded at line %d", c.lines["probe.port"])
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"probe:\n  greting_timeout: 5s\n", `bad.yaml:2: unknown key "greting_timeout" in probe (did you mean "greeting_timeout"?)`},
		{"resolvr:\n  servers: []\n", `bad.yaml:1: unknown key "resolvr" at the top level (did you mean "resolver"?)`},
		{"resolver:\n  timeout: 5\n", `bad.yaml:2: resolver.timeout: "5" is not a duration`},
		{"resolver:\n  timeout: 0\n", `bad.yaml:2: resolver.timeout: "0" is not a duration`},
		{"resolver:\n  servers: [8.8.8.8, dns.google]\n", `bad.yaml:2: resolver.servers: "dns.google" is not an IP address`},
		{"probe:\n  port: 70000\n", `bad.yaml:2: probe.port: "70000" is not a valid number from 0 to 65535`},
		{"probe:\n  port: 0\n", `bad.yaml:2: probe.port: must be 1-65535`},
		{"probe:\n  allow_networks: [10.0.0.1/8]\n", `bad.yaml:2: probe.allow_networks: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`},
		{"probe:\n  allow_networks: 10.0.0.0/8\n", `bad.yaml:2: probe.allow_networks: want a list`},
		{"policy:\n  actions:\n    mx.port26: defer\n", `bad.yaml:3: policy.actions: unknown check "mx.port26" (did you mean "mx.port25"?)`},
		{"policy:\n  actions:\n    mx.port25: bounce\n", `bad.yaml:3: policy.actions: unknown action "bounce"`},
		{"policy:\n  actions:\n    mx.port25: flag\n    mx.port25: defer\n", `bad.yaml:4: policy.actions: check "mx.port25" is listed twice (first on line 3)`},
		{"policy:\n  on_temperror: reject\n", `bad.yaml:2: policy.on_temperror: "reject": want accept or defer`},
		{"policy:\n  allow_domains: [exa_mple.com]\n", `bad.yaml:2: policy.allow_domains: "exa_mple.com" is not a valid domain name`},
		{"header:\n  name: X MXGuard\n", `bad.yaml:2: header.name: "X MXGuard" is not a valid header field name`},
		{"cache:\n  min_ttl: 2h\n", `bad.yaml: cache.max_ttl: is below cache.min_ttl`},
		{"cache:\n  max_ttl: 1s\n", `bad.yaml:2: cache.max_ttl: is below cache.min_ttl`},
		{"milter:\n  listen: inet:8891\n", `bad.yaml:2: milter.listen: "inet:8891": missing host`},
		{"milter:\n  socket_mode: \"0666\"\n", `bad.yaml:2: milter.socket_mode: "0666" lets every local user`},
		{"log:\n  level: verbose\n", `bad.yaml:2: log.level: "verbose": want one of debug, info, warn, error`},
		{"checks:\n  header_from: yes please\n", `bad.yaml:2: checks.header_from: "yes please" is not a valid boolean`},
		{"probe:\n  port: 25\n  port: 26\n", `bad.yaml:3: probe.port is set twice (first on line 2)`},
		{"probe: [1, 2]\n", `bad.yaml:1: probe: want a mapping`},
		{"- probe\n", `bad.yaml:1: want a mapping (key: value lines), got a list`},
		{"probe:\n  port: 25\n bad indent\n", `bad.yaml:3: did not find expected key`},
		{"probe:\n  port: 2525\n---\nbogus: 1\n", `bad.yaml:3: a second YAML document`},
		{"probe:\n  port:\n", `bad.yaml:2: probe.port: has no value`},
		{"decision_timeout:\n", `bad.yaml:1: decision_timeout: has no value`},
		{"probe:\n  allow_networks: [\"::ffff:0:0/80\"]\n", `mixes IPv4-mapped`},
		{"api:\n  listen: 0.0.0.0:9892\n", `bad.yaml:2: api.listen: 0.0.0.0:9892 is not a loopback address: set api.token`},
		{"api:\n  listen: panel.example:9892\n", `bad.yaml:2: api.listen: panel.example:9892 is not a loopback address: set api.token`},
		{"api:\n  listen: 9892\n", `bad.yaml:2: api.listen: want HOST:PORT`},
		{"api:\n  rate: 0\n", `bad.yaml:2: api.rate: must be a positive number`},
		{"api:\n  rate: .inf\n", `bad.yaml:2: api.rate: must be a positive number`},
		{"api:\n  max_concurrency: 0\n", `bad.yaml:2: api.max_concurrency: must be a positive number`},
		{"api:\n  token: two words\n", `bad.yaml:2: api.token: must be printable ASCII without spaces`},
		{"milter:\n  allow_users: [root, postifx]\n", `bad.yaml:2: milter.allow_users: no user or group named "postifx" on this host`},
		{"policy_service:\n  allow_users: postfix\n", `bad.yaml:2: policy_service.allow_users: want a list`},
		{"policy_service:\n  allow_users: [nosuchuser]\n", `bad.yaml:2: policy_service.allow_users: no user or group named "nosuchuser"`},
	}
	for _, c := range cases {
		_, err := Parse("bad.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.yaml, err, c.want)
		}
	}
}

func TestAPIOffLoopbackNeedsAToken(t *testing.T) {
	for _, yaml := range []string{
		"api:\n  listen: 127.0.0.1:9892\n",
		"api:\n  listen: \"[::1]:9892\"\n",
		"api:\n  listen: localhost:9892\n",
		"api:\n  listen: 0.0.0.0:9892\n  token: Zm9vYmFyYmF6\n",
	} {
		if _, err := Parse("ok.yaml", []byte(yaml)); err != nil {
			t.Errorf("%q: %v", yaml, err)
		}
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	c, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalise(c.Engine()), normalise(Default().Engine())) {
		t.Error("an empty file does not give the defaults")
	}
}

func TestParseSocket(t *testing.T) {
	cases := []struct{ spec, network, addr string }{
		{"inet:127.0.0.1:8891", "tcp", "127.0.0.1:8891"},
		{"inet:localhost:8891", "tcp", "localhost:8891"},
		{"inet6:[::1]:8891", "tcp", "[::1]:8891"},
		{"inet6:::1:8891", "tcp", "[::1]:8891"},
		{"inet:8891@127.0.0.1", "tcp", "127.0.0.1:8891"},
		{"unix:/run/mxguard/milter.sock", "unix", "/run/mxguard/milter.sock"},
		{"local:/run/mxguard/milter.sock", "unix", "/run/mxguard/milter.sock"},
	}
	for _, c := range cases {
		s, err := ParseSocket(c.spec)
		if err != nil || s.Network != c.network || s.Address != c.addr {
			t.Errorf("%s: %+v %v", c.spec, s, err)
		}
	}
	for _, bad := range []string{"", "inet:", "inet:127.0.0.1", "inet:127.0.0.1:0", "tcp:127.0.0.1:8891", "unix:relative.sock", "inet6:127.0.0.1:8891", "inet::8891"} {
		if _, err := ParseSocket(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
