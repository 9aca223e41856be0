package policy

import (
	"testing"
	"time"
)

func TestTTLFor(t *testing.T) {
	c := &cachedResolver{cfg: CacheConfig{MinTTL: time.Minute, MaxTTL: time.Hour, NegativeTTL: 5 * time.Minute, NegativeMaxTTL: 15 * time.Minute}}
	cases := []struct {
		a    dnsAnswer
		want time.Duration
	}{
		{dnsAnswer{Kind: kindFound, TTL: 0, TTLKnown: true}, time.Minute},
		{dnsAnswer{Kind: kindFound, TTL: 10 * time.Minute, TTLKnown: true}, 10 * time.Minute},
		{dnsAnswer{Kind: kindFound, TTL: 48 * time.Hour, TTLKnown: true}, time.Hour},
		{dnsAnswer{Kind: kindNXDomain, TTL: 0, TTLKnown: true}, time.Minute}, // SOA minimum 0: as short as allowed
		{dnsAnswer{Kind: kindNXDomain}, 5 * time.Minute},                     // no SOA at all
		{dnsAnswer{Kind: kindNoData, TTL: 3 * time.Hour, TTLKnown: true}, 15 * time.Minute},
	}
	for _, tc := range cases {
		if got := c.ttlFor(&tc.a); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.a, got, tc.want)
		}
	}
}
