package peers

import (
	"errors"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The kernel names this process as the peer of its own connections, over a
// unix socket and over loopback TCP.
func TestIdentifyOwnConnections(t *testing.T) {
	for _, network := range []string{"unix", "tcp", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			switch network {
			case "unix":
				addr = filepath.Join(t.TempDir(), "s")
			case "tcp6":
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			p, err := Identify(server)
			if err != nil {
				t.Fatal(err)
			}
			if p.UID != uint32(os.Getuid()) {
				t.Errorf("uid %d, want %d", p.UID, os.Getuid())
			}
			if network == "unix" && (!p.HasGID || p.GID != uint32(os.Getgid())) {
				t.Errorf("gid %d (%v), want %d", p.GID, p.HasGID, os.Getgid())
			}
		})
	}
}

// A TCP peer whose socket is not on this host, or is gone, is not local.
func TestIdentifyGonePeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client.(*net.TCPConn).SetLinger(0) // gone at once, no TIME_WAIT socket
	client.Close()
	if _, err := Identify(server); !errors.Is(err, ErrNotLocal) {
		t.Errorf("Identify of a gone peer: %v, want ErrNotLocal", err)
	}
}

func TestAllowUsersAndGroups(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	group, err := user.LookupGroupId(me.Gid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(me.Uid, 10, 32)
	gid, _ := strconv.ParseUint(me.Gid, 10, 32)
	byUser, err := ParseAllow([]string{me.Username})
	if err != nil {
		t.Fatal(err)
	}
	if !byUser.Admits(Peer{UID: uint32(uid)}) || byUser.Admits(Peer{UID: uint32(uid) + 1}) {
		t.Error("a list of one user admits the wrong peers")
	}
	byGroup := &Allow{names: []string{group.Name}, gids: []uint32{uint32(gid)}, groups: map[uint32]memberships{}}
	if !byGroup.Admits(Peer{UID: uint32(uid)}) {
		t.Error("a TCP peer whose user is in the group is refused")
	}
	if !byGroup.Admits(Peer{UID: 1 << 30, GID: uint32(gid), HasGID: true}) {
		t.Error("a unix-socket peer whose process has the group is refused")
	}
	if _, err := ParseAllow([]string{"no-such-user-or-group"}); err == nil {
		t.Error("an unknown name is accepted")
	}
	var anyone *Allow
	if !anyone.Admits(Peer{UID: 12345}) {
		t.Error("no list refuses a peer")
	}
}

func TestLogThrottle(t *testing.T) {
	th := NewLogThrottle(time.Minute)
	now := time.Now()
	if ok, _ := th.Allow("a", now); !ok {
		t.Fatal("the first line is held back")
	}
	for range 9 {
		if ok, _ := th.Allow("a", now.Add(time.Second)); ok {
			t.Fatal("a second line within the minute")
		}
	}
	if ok, _ := th.Allow("b", now); !ok {
		t.Error("another peer's first line is held back")
	}
	if ok, n := th.Allow("a", now.Add(time.Minute)); !ok || n != 9 {
		t.Errorf("after the minute: %v, %d suppressed; want true, 9", ok, n)
	}
}
