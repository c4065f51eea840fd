// SPDX-License-Identifier: Apache-2.0

package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Peer is a caller as the kernel reports it (SO_PEERCRED) when it connects.
type Peer struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32 // supplementary groups, when /proc could be read
	Exe      string   // the peer's executable, when /proc could be read
}

// AuthType implements credentials.AuthInfo.
func (Peer) AuthType() string { return "peercred" }

func (p Peer) String() string {
	return fmt.Sprintf("uid=%d gid=%d pid=%d exe=%q", p.UID, p.GID, p.PID, p.Exe)
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
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	p := Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	// /proc is read once, at connect time; a pid can be reused later, so
	// the executable check is a second line of defence after uid/gid.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cred.Pid)); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
	}
	p.Groups = procGroups(cred.Pid)
	return c, p, nil
}

func procGroups(pid int32) []uint32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		var gs []uint32
		for _, f := range strings.Fields(rest) {
			if g, err := strconv.ParseUint(f, 10, 32); err == nil {
				gs = append(gs, uint32(g))
			}
		}
		return gs
	}
	return nil
}

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, Peer{}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

func (peerCreds) OverrideServerName(string) error { return nil }

// Policy says which callers may use the key provider.
type Policy struct {
	UIDs []uint32
	GIDs []uint32 // primary or supplementary group
	Exes []string // when set, the peer's executable must be one of these
}

// check returns "" when p may call, else the reason it may not.
func (pol Policy) check(p Peer) string {
	allowed := slices.Contains(pol.UIDs, p.UID) || slices.Contains(pol.GIDs, p.GID) ||
		slices.ContainsFunc(p.Groups, func(g uint32) bool { return slices.Contains(pol.GIDs, g) })
	if !allowed {
		return "uid and gid not allowed"
	}
	if len(pol.Exes) > 0 && !slices.Contains(pol.Exes, p.Exe) {
		return "executable not allowed"
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
