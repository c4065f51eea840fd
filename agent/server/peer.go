// SPDX-License-Identifier: Apache-2.0

package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Peer is a caller as the kernel reports it when it connects: SO_PEERCRED
// and SO_PEERGROUPS, the credentials it had when it called connect(2).
// Nothing is read from /proc: under byokd.service's ProtectProc=invisible
// other users' processes are not there, and a pid can be reused.
type Peer struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32 // supplementary groups
}

// AuthType implements credentials.AuthInfo.
func (Peer) AuthType() string { return "peercred" }

func (p Peer) String() string {
	return fmt.Sprintf("uid=%d gid=%d pid=%d groups=%v", p.UID, p.GID, p.PID, p.Groups)
}

// peerCreds are gRPC transport credentials that read SO_PEERCRED from the
// unix socket at connection time. They add no encryption: the socket's file
// mode and the allow-list are the protection.
type peerCreds struct{}

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("peer credentials need a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var groups []uint32
	var cerr, gerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		groups, gerr = peerGroups(int(fd))
	}); err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	if gerr != nil {
		return nil, nil, fmt.Errorf("peer groups: %w", gerr)
	}
	return c, Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Groups: groups}, nil
}

// peerGroups reads the peer's supplementary groups (SO_PEERGROUPS, Linux
// 4.13), growing the buffer when the kernel says it is too small. An older
// kernel has none to give (ENOPROTOOPT): callers are then checked by uid
// and primary gid only.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for {
		n := uint32(4 * len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == unix.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
		case e == unix.ENOPROTOOPT:
			return nil, nil
		case e != 0:
			return nil, e
		default:
			return buf[:n/4], nil
		}
	}
}

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, Peer{}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

func (peerCreds) OverrideServerName(string) error { return nil }

// Policy says which callers may use the key provider: by uid and gid, what
// the kernel vouches for. (There is no check of the caller's executable:
// byokd cannot read another user's /proc/PID/exe without a capability its
// unit drops, and a caller could exec another program once connected.)
type Policy struct {
	UIDs []uint32
	GIDs []uint32 // primary or supplementary group
}

// check returns "" when p may call, else the reason it may not.
func (pol Policy) check(p Peer) string {
	allowed := slices.Contains(pol.UIDs, p.UID) || slices.Contains(pol.GIDs, p.GID) ||
		slices.ContainsFunc(p.Groups, func(g uint32) bool { return slices.Contains(pol.GIDs, g) })
	if !allowed {
		return "uid and gid not allowed"
	}
	return ""
}

func peerOf(ctx context.Context) (Peer, bool) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, false
	}
	p, ok := pr.AuthInfo.(Peer)
	return p, ok
}
