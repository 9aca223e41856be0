package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/mxguard/mxguard/internal/redislab"
	"github.com/mxguard/mxguard/internal/spectest"
	"github.com/mxguard/mxguard/internal/testkit"
	"github.com/mxguard/mxguard/smtptest"
)

// Two mxguard serve processes share one Redis: the second decides a domain
// the first decided without asking DNS or probing, and exports the fleet
// cache's state; the values are signed with cache.shared.key; neither the
// password in the URL nor the key is ever logged.
func TestServeFleet(t *testing.T) {
	srv := redislab.Start(t, "requirepass", "fleet-pw")
	sb := spectest.Sandbox(t)
	url := strings.Replace(srv.URL, "redis://", "redis://:fleet-pw@", 1)
	var milters []string
	var metricsPorts []int
	var daemons []*daemonProc
	for i := 0; i < 2; i++ {
		milter, metricsPort := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), freeTCPPort(t)
		cfg := filepath.Join(t.TempDir(), "mxguard.yaml")
		writeFile(t, cfg, sandboxConfig(sb, "inet:"+milter, metricsPort, "cache:\n  shared:\n    url: "+url+"\n    key: "+fleetKey+"\n"))
		daemons = append(daemons, startDaemon(t, cfg, "tcp", milter))
		milters, metricsPorts = append(milters, milter), append(metricsPorts, metricsPort)
	}
	for _, p := range metricsPorts {
		testkit.WaitFor(t, "the shared cache to be up", func() bool {
			_, m := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p))
			return strings.Contains(m, "mxguard_shared_cache_up 1")
		})
	}
	conn := smtptest.MilterConn{ClientIP: "127.0.3.1", ClientName: "mail.good.test", HELO: "mail.good.test",
		Messages: []smtptest.MilterMessage{{From: "a@some-refused.test", To: []string{"u@remote.example"}}}}
	play := func(addr string) string {
		res, err := smtptest.PlayMilter("tcp", addr, conn)
		if err != nil || len(res) != 1 {
			t.Fatalf("%v %v", res, err)
		}
		h, _ := res[0].Header("X-MXGuard")
		return h
	}
	first := play(milters[0])
	// The first node's writes are asynchronous: the second may ask before
	// they land; once they have, it must ask nobody.
	var second string
	testkit.WaitFor(t, "the second node to decide from the shared cache", func() bool {
		queries := sb.DNS.Queries()
		second = play(milters[1])
		return sb.DNS.Queries() == queries
	})
	if first != second || !strings.HasPrefix(first, "flag; domain=some-refused.test") {
		t.Errorf("first %q, second %q", first, second)
	}
	_, m := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPorts[1]))
	// The series exists from the start at 0: count at least one hit.
	if !regexp.MustCompile(`mxguard_cache_lookups_total\{cache="shared-dns",result="hit"\} [1-9]`).MatchString(m) {
		t.Errorf("no shared cache hits in /metrics")
	}
	if !strings.Contains(m, `mxguard_shared_cache_refused_values_total{reason="signature"} 0`) {
		t.Errorf("values refused for their signature:\n%s", m)
	}
	c := redislab.Client(t, rueidis.ClientOption{InitAddress: []string{srv.Addr}, Password: "fleet-pw"})
	v, err := c.Do(context.Background(), c.B().Get().Key("mxguard:v1:dns:15:some-refused.test").Build()).ToString()
	if !regexp.MustCompile(`^[0-9a-f]{64}\{"v":2,`).MatchString(v) {
		t.Errorf("the shared MX answer is %q, %v; want it signed", v, err)
	}
	for _, d := range daemons {
		if log := d.log.String(); strings.Contains(log, "fleet-pw") || strings.Contains(log, fleetKey) {
			t.Errorf("the password or the key is in the log:\n%s", log)
		}
	}
}

const fleetKey = "d3adb33f-a-long-random-fleet-secret"
