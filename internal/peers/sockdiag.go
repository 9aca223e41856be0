package peers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// socketUID asks the kernel which user owns the TCP socket whose local
// address is local and whose remote is remote: one exact sock_diag query
// (NETLINK_SOCK_DIAG, inet_diag_req_v2 without NLM_F_DUMP), which the
// kernel answers from its socket hash, not by walking every socket as a
// dump does (milliseconds per connection on a busy relay).
func socketUID(local, remote *net.TCPAddr) (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers at once; a second is for a machine under load.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	if err := unix.Sendto(fd, diagRequest(local, remote), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	return parseDiagReply(buf[:n])
}

// Sizes of the netlink structures (linux/netlink.h, linux/inet_diag.h).
const (
	nlmsghdrLen   = 16
	diagReqLen    = 56 // inet_diag_req_v2
	diagMsgUIDOff = 64 // inet_diag_msg.idiag_uid
)

var errNoSocket = errors.New("no such socket")

func diagRequest(local, remote *net.TCPAddr) []byte {
	ne := binary.NativeEndian
	b := make([]byte, nlmsghdrLen+diagReqLen)
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	r := b[nlmsghdrLen:]
	family, src, dst := uint8(unix.AF_INET6), local.IP.To16(), remote.IP.To16()
	if l4, r4 := local.IP.To4(), remote.IP.To4(); l4 != nil && r4 != nil {
		family, src, dst = unix.AF_INET, l4, r4
	}
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff) // every state
	id := r[8:]                     // inet_diag_sockid: ports and addresses in network order
	binary.BigEndian.PutUint16(id[0:], uint16(local.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(remote.Port))
	copy(id[4:20], src)
	copy(id[20:36], dst)
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE: any socket of these addresses
	ne.PutUint32(id[44:], 0xffffffff)
	return b
}

func parseDiagReply(b []byte) (uint32, error) {
	ne := binary.NativeEndian
	if len(b) < nlmsghdrLen {
		return 0, errors.New("sock_diag: short reply")
	}
	switch ne.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		if len(b) < nlmsghdrLen+4 {
			return 0, errors.New("sock_diag: short error reply")
		}
		errno := unix.Errno(-int32(ne.Uint32(b[nlmsghdrLen:])))
		if errno == unix.ENOENT {
			return 0, errNoSocket
		}
		return 0, fmt.Errorf("sock_diag: %w", errno)
	case unix.SOCK_DIAG_BY_FAMILY:
		if len(b) < nlmsghdrLen+diagMsgUIDOff+4 {
			return 0, errors.New("sock_diag: short reply")
		}
		return ne.Uint32(b[nlmsghdrLen+diagMsgUIDOff:]), nil
	}
	return 0, fmt.Errorf("sock_diag: unexpected reply type %d", ne.Uint16(b[4:]))
}
