// Package peers tells who is on the other end of a front-end connection.
// On a hosting relay, customers' code runs on the same host as the MTA and
// shares its loopback: milter.allow_users and policy_service.allow_users
// let only the MTA's user or group hold a session. The peer's user comes
// from the kernel: SO_PEERCRED on unix sockets, and for TCP the peer
// socket's owner in the kernel's socket table (sock_diag, as `ss -e` shows
// it), which only holds sockets of this host.
package peers

import (
	"errors"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Peer is the local user at the other end of a connection.
type Peer struct {
	UID uint32
	// GID is the peer process's group where the kernel says (unix
	// sockets); for TCP only the socket's owner is known.
	GID    uint32
	HasGID bool
}

func (p Peer) String() string { return "uid " + strconv.FormatUint(uint64(p.UID), 10) }

// Describe names the peer for a log line: its uid, and its user's name
// when the host knows one.
func (p Peer) Describe() string {
	id := strconv.FormatUint(uint64(p.UID), 10)
	if u, err := user.LookupId(id); err == nil {
		return "uid " + id + " (" + u.Username + ")"
	}
	return "uid " + id
}

// ErrNotLocal is a TCP peer that is not a socket of this host.
var ErrNotLocal = errors.New("the peer is not on this host")

// Identify asks the kernel which user holds the other end of c.
func Identify(c net.Conn) (Peer, error) {
	switch c := c.(type) {
	case *net.UnixConn:
		return unixPeer(c)
	case *net.TCPConn:
		return tcpPeer(c)
	}
	return Peer{}, fmt.Errorf("cannot tell the user of a %T", c)
}

func unixPeer(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, HasGID: true}, nil
}

// tcpPeer looks the peer's socket up by its addresses: from its side, our
// remote address is its local one.
func tcpPeer(c *net.TCPConn) (Peer, error) {
	local, _ := c.RemoteAddr().(*net.TCPAddr)
	remote, _ := c.LocalAddr().(*net.TCPAddr)
	if local == nil || remote == nil {
		return Peer{}, fmt.Errorf("%w (no TCP addresses)", ErrNotLocal)
	}
	uid, err := socketUID(local, remote)
	if err != nil {
		// Not in this host's table: a remote peer (or one that has closed).
		return Peer{}, fmt.Errorf("%w (%s: %v)", ErrNotLocal, local, err)
	}
	return Peer{UID: uid}, nil
}

// Allow is a list of local users and groups that may hold a session; the
// zero value and nil allow anyone.
type Allow struct {
	names []string
	uids  []uint32
	gids  []uint32

	mu     sync.Mutex
	groups map[uint32]memberships // by uid: the groups of a TCP peer's user
}

type memberships struct {
	gids    []uint32
	fetched time.Time
}

// How long a user's groups are remembered, and for how many users: the
// MTA opens a connection per SMTP session, and /etc/group is read once a
// minute, not each time.
const (
	groupsTTL  = time.Minute
	groupsKept = 1024
)

// ParseAllow resolves user or group names: a name is the user of that
// name or, when there is none, the group. A name that is neither is an
// error, so that a typo does not lock the MTA out unnoticed.
func ParseAllow(names []string) (*Allow, error) {
	if len(names) == 0 {
		return nil, nil
	}
	a := &Allow{names: slices.Clone(names), groups: map[uint32]memberships{}}
	for _, name := range names {
		if u, err := user.Lookup(name); err == nil {
			id, err := strconv.ParseUint(u.Uid, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("user %q has uid %q", name, u.Uid)
			}
			a.uids = append(a.uids, uint32(id))
			continue
		}
		g, err := user.LookupGroup(name)
		if err != nil {
			return nil, fmt.Errorf("no user or group named %q on this host", name)
		}
		id, err := strconv.ParseUint(g.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("group %q has gid %q", name, g.Gid)
		}
		a.gids = append(a.gids, uint32(id))
	}
	return a, nil
}

// Names are the names the list was made from.
func (a *Allow) Names() []string {
	if a == nil {
		return nil
	}
	return a.names
}

// Admits reports whether p may hold a session.
func (a *Allow) Admits(p Peer) bool {
	if a == nil {
		return true
	}
	if slices.Contains(a.uids, p.UID) || p.HasGID && slices.Contains(a.gids, p.GID) {
		return true
	}
	if len(a.gids) == 0 {
		return false
	}
	for _, g := range a.groupsOf(p.UID) {
		if slices.Contains(a.gids, g) {
			return true
		}
	}
	return false
}

// groupsOf is the primary and supplementary groups of uid.
func (a *Allow) groupsOf(uid uint32) []uint32 {
	now := time.Now()
	a.mu.Lock()
	m, ok := a.groups[uid]
	a.mu.Unlock()
	if ok && now.Sub(m.fetched) < groupsTTL {
		return m.gids
	}
	m = memberships{fetched: now}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		ids, _ := u.GroupIds()
		for _, s := range append(ids, u.Gid) {
			if id, err := strconv.ParseUint(s, 10, 32); err == nil {
				m.gids = append(m.gids, uint32(id))
			}
		}
	}
	a.mu.Lock()
	if len(a.groups) >= groupsKept {
		clear(a.groups)
	}
	a.groups[uid] = m
	a.mu.Unlock()
	return m.gids
}

// Check identifies the peer of c and reports why it may not hold a
// session, if it may not. peer names it for logs and log throttling: the
// peer's uid, or for a peer that is not local its address.
func (a *Allow) Check(c net.Conn) (peer string, err error) {
	if a == nil {
		return Address(c), nil
	}
	p, err := Identify(c)
	if err != nil {
		return Address(c), err
	}
	if !a.Admits(p) {
		return p.Describe(), fmt.Errorf("%s is not in allow_users %v", p.Describe(), a.names)
	}
	return p.String(), nil
}

// Checker is Check on the list load returns at each connection, so that a
// reload applies to the next one.
func Checker(load func() *Allow) func(net.Conn) (string, error) {
	return func(c net.Conn) (string, error) { return load().Check(c) }
}

// Address is the peer's address without its port: what a peer is known by
// when its user is not asked.
func Address(c net.Conn) string {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UnixAddr:
		return "unix:" + c.LocalAddr().String()
	}
	return c.RemoteAddr().String()
}
