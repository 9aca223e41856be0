package checkapi

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/peertest"
)

func TestMain(m *testing.M) { peertest.Main(m) }

// panelServedWithinASecond is the control panel's check on a new
// connection, which must be answered within a second.
func panelServedWithinASecond(t *testing.T, base string) {
	t.Helper()
	began := time.Now()
	a := get(t, base+"/v1/check?domain=example.com", "Bearer panel-token")
	if took := time.Since(began); a.code != 200 || took > time.Second {
		t.Fatalf("the panel's check: %d after %v, want 200 within 1s", a.code, took)
	}
}

// 1,030 connections without the token that each ask for /x and stay open
// (kept alive after a 404 before any authentication, they once locked the
// panel out for 50 s) are answered 401 and closed.
func TestAPI1030RefusedKeepAliveConnectionsDoNotLockOutThePanel(t *testing.T) {
	rec := &countingRecorder{codes: map[int]int{}}
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "panel-token"}, Options{Recorder: rec})
	c := peertest.Start(t, peertest.Stranger, peertest.HTTPNotFound, "tcp", base[len("http://"):], 1030)
	if c.Opened != 0 {
		t.Errorf("%d refused connections kept alive", c.Opened)
	}
	panelServedWithinASecond(t, base)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.codes[404] != 0 || rec.codes[401]+rec.codes[429] != 1030 {
		t.Errorf("answers %v: want 401 or 429 for each of the 1030, no 404 before authentication", rec.codes)
	}
}

// 1,030 connections that say nothing fill only the unauthenticated pool,
// where each new connection takes the place of the oldest.
func TestAPI1030SilentConnectionsDoNotLockOutThePanel(t *testing.T) {
	rec := &countingRecorder{codes: map[int]int{}}
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "panel-token"}, Options{Recorder: rec, HeaderTimeout: time.Minute})
	peertest.Start(t, peertest.Stranger, peertest.Silent, "tcp", base[len("http://"):], 1030)
	panelServedWithinASecond(t, base)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.dropped == 0 {
		t.Error("no connection was evicted")
	}
}

// The panel's authenticated keep-alive connection outlives a flood of
// strangers' connections: they evict each other, not it.
func TestAuthenticatedConnectionsAreKept(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "panel-token"}, Options{MaxConns: 8, HeaderTimeout: time.Minute})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	ask := func() (reused bool) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/check?domain=example.com", nil)
		req.Header.Set("Authorization", "Bearer panel-token")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%d", resp.StatusCode)
		}
		return reused
	}
	ask()
	peertest.Start(t, peertest.Stranger, peertest.Silent, "tcp", base[len("http://"):], 100)
	if !ask() {
		t.Error("a flood of unauthenticated connections evicted the panel's keep-alive connection")
	}
}

// A refused client stays refused however many other clients come: today's
// 4,096 other /64s cannot reset its bucket.
func TestRefusedClientIsNotForgottenInAFlood(t *testing.T) {
	l := newLimiter(clientsKept)
	now := time.Unix(1e9, 0)
	victim := clientKey("192.0.2.1:1")
	if !allowed(l, victim, 0.01, now) || allowed(l, victim, 0.01, now) {
		t.Fatal("rate 0.01: want one request, then a refusal")
	}
	for i := range 2 * clientsKept {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 7: 1})
		allowed(l, clientKey("["+ip.String()+"]:1"), 0.01, now.Add(time.Millisecond))
	}
	if allowed(l, victim, 0.01, now.Add(2*time.Millisecond)) {
		t.Error("after a flood of other /64s, the refused client was allowed again")
	}
	// A client whose bucket has refilled may be forgotten: nothing is lost.
	later := now.Add(time.Hour)
	for i := range clientsKept + 1 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !allowed(l, clientKey(ip.String()+":1"), 1000, later) {
			t.Fatalf("client %d refused after every bucket refilled", i)
		}
	}
}

// An unknown path without the token is a 401, and with it a request that
// spends the client's bucket like any other.
func TestUnknownPathsAreAuthenticatedAndLimited(t *testing.T) {
	_, base := startAPI(t, &Config{Engine: &fakeEngine{}, Token: "t", Rate: 0.01}, Options{})
	if a := get(t, base+"/x", ""); a.code != 401 {
		t.Errorf("/x without the token: %d, want 401", a.code)
	}
	if a := get(t, base+"/x", "Bearer t"); a.code != 404 {
		t.Errorf("/x with the token: %d, want 404", a.code)
	}
	if a := get(t, base+"/x", "Bearer t"); a.code != 429 {
		t.Errorf("a second /x within the limit: %d, want 429", a.code)
	}
}
