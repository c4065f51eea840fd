// SPDX-License-Identifier: Apache-2.0

// Package keyprovider is the client of byokd's key provider socket, the
// byokd.keyprovider.v1 gRPC service (proto/byokd/keyprovider/v1): where the
// socket is, how to dial it, the key-provider modes, which node states serve
// keys, and what byokd's refusals mean. byokctl, the WiredTiger plugin and
// the tests use it; nothing else dials the socket.
//
// It links gRPC and the generated protocol code, nothing of byokd's agent.
package keyprovider

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
	"github.com/byokd/byokd/version"
)

// DefaultSocket is where byokd serves the key provider on a node (the
// byokd.socket unit and socket.path's default).
const DefaultSocket = "/run/byokd/keyprovider.sock"

// ClusterSocket is the socket of byokd@name.service, the byokd of one
// cluster of several on a host (byokd@.socket).
// Its folder, /run/byokd-NAME, is made by byokd@.socket, owned by root:
// not inside /run/byokd, which the single byokd's user owns.
func ClusterSocket(name string) string { return "/run/byokd-" + name + "/keyprovider.sock" }

// ValidClusterName reports whether name can name a byokd@ instance: 1 to
// 18 letters, digits, '_' or '-', not starting with '-' (its client group,
// byokd-NAME-clients, must be a valid group name of at most 32 characters).
func ValidClusterName(name string) error {
	if len(name) == 0 || len(name) > 18 || name[0] == '-' {
		return fmt.Errorf("cluster name %q: want 1 to 18 letters, digits, '_' or '-', not starting with '-'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("cluster name %q: want 1 to 18 letters, digits, '_' or '-', not starting with '-'", name)
		}
	}
	return nil
}

// Mode is a key-provider mode: how a client gets its data keys.
type Mode string

const (
	// Release: the client fetches a table's data key (GetDataKey) and
	// encrypts in its own process.
	Release Mode = "release"
	// Strict: the data key stays in byokd; the client has byokd encrypt
	// and decrypt every block (Encrypt, Decrypt).
	Strict Mode = "strict"
)

// Modes are every mode, in the order byokd reports them.
func Modes() []Mode { return []Mode{Release, Strict} }

// ParseMode reads a mode by its name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes() {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown key-provider mode %q (want %q or %q)", s, Release, Strict)
}

// Serving reports whether byokd answers key calls in state s: UNLOCKED, and
// DEGRADED (Key Protect unreachable, within the offline grace).
func Serving(s pb.State) bool {
	return s == pb.State_STATE_UNLOCKED || s == pb.State_STATE_DEGRADED
}

// The kinds of byokd's refusals; test with errors.Is on an error from Err.
var (
	// ErrLocked: the node is locked (or still starting); no key is served
	// until the customer's root key is back. byokd answers FAILED_PRECONDITION.
	ErrLocked = errors.New("node locked")
	// ErrRefused: byokd refused this caller or call: the caller's uid or gid
	// is not allowed, the mode is not enabled, or the operator action is not
	// for this caller. byokd answers PERMISSION_DENIED.
	ErrRefused = errors.New("refused by byokd")
	// ErrUnavailable: byokd could not be reached, or asked for a retry.
	ErrUnavailable = errors.New("byokd unavailable")
)

// Error is a refusal from byokd, or a failure to reach it: the gRPC code
// and byokd's message. errors.Is matches it against ErrLocked, ErrRefused
// and ErrUnavailable by its code, which is what those mean for the key calls
// (GetDataKey, Encrypt, Decrypt) and Status; an operator call (AcceptKey,
// ForgetKey) also answers FAILED_PRECONDITION when it does not apply to the
// node's state, which its message says.
type Error struct {
	Code codes.Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is reports whether e is of the kind target.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrLocked:
		return e.Code == codes.FailedPrecondition
	case ErrRefused:
		return e.Code == codes.PermissionDenied
	case ErrUnavailable:
		return e.Code == codes.Unavailable
	}
	return false
}

// Err turns an error of a call to byokd into an *Error (nil stays nil; an
// error that carries no gRPC status is returned as it is).
func Err(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Code: s.Code(), Msg: s.Message()}
}

// Client is a connection to byokd's key provider socket.
type Client struct {
	pb.KeyProviderServiceClient
	conn   *grpc.ClientConn
	socket string
}

// Dial prepares a connection to byokd's socket at path ("" is
// DefaultSocket); a relative path is taken from the working directory. Like
// grpc.NewClient, it does not connect: the first call does. opts are added
// to the defaults (no transport security: a unix socket, where byokd checks
// the caller's credentials; a user agent naming this build).
func Dial(path string, opts ...grpc.DialOption) (*Client, error) {
	if path == "" {
		path = DefaultSocket
	}
	// A gRPC "unix://" target is a URL: a relative path pasted into it
	// would be read as a host name (".dev" in unix://.dev/keyprovider.sock),
	// and '#', '?' or '%' in a path as URL syntax; an absolute path,
	// escaped, is only ever a path.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("byokd socket %s: %w", path, err)
	}
	target := (&url.URL{Scheme: "unix", Path: abs}).String()
	conn, err := grpc.NewClient(target, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("byokd-client/" + version.Version),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("byokd socket %s: %w", path, err)
	}
	return &Client{KeyProviderServiceClient: pb.NewKeyProviderServiceClient(conn), conn: conn, socket: abs}, nil
}

// Socket is the socket's absolute path.
func (c *Client) Socket() string { return c.socket }

// Conn is the gRPC connection, for byokd's other services on the socket
// (grpc.health.v1).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
