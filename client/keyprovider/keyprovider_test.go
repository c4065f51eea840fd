// SPDX-License-Identifier: Apache-2.0

package keyprovider_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/byokd/byokd/client/keyprovider"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// server answers Status with its state, or with err when set, and records
// the user agent it was called with.
type server struct {
	pb.UnimplementedKeyProviderServiceServer
	err   error
	agent chan string
}

func (s *server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ua := md.Get("user-agent"); len(ua) > 0 {
		select {
		case s.agent <- ua[0]:
		default:
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	return &pb.StatusResponse{State: pb.State_STATE_UNLOCKED, Modes: []string{"release"}}, nil
}

// serve serves s on a unix socket at dir/name.
func serve(t *testing.T, dir, name string, s *server) string {
	t.Helper()
	path := filepath.Join(dir, name)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return path
}

func status1(t *testing.T, path string) (*pb.StatusResponse, error) {
	t.Helper()
	c, err := keyprovider.Dial(path)
	if err != nil {
		t.Fatalf("Dial(%q): %v", path, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Status(ctx, &pb.StatusRequest{})
}

// TestDialPaths: the socket is found by an absolute path and by a relative
// one, with or without "./", from the working directory (a relative path
// pasted into a unix:// target was read as a host name: "invalid (non-empty)
// authority: .dev").
func TestDialPaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, ".dev"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &server{agent: make(chan string, 1)}
	abs := serve(t, filepath.Join(dir, ".dev"), "keyprovider.sock", s)
	t.Chdir(dir)
	// Characters that mean something in a URL, in a folder name.
	odd := filepath.Join(dir, "a b#c?d%41ü")
	if err := os.Mkdir(odd, 0o700); err != nil {
		t.Fatal(err)
	}
	oddSock := serve(t, odd, "k.sock", s)
	for _, path := range []string{abs, ".dev/keyprovider.sock", "./.dev/keyprovider.sock", "../" + filepath.Base(dir) + "/.dev/keyprovider.sock",
		oddSock, "a b#c?d%41ü/k.sock"} {
		st, err := status1(t, path)
		if err != nil {
			t.Fatalf("Status through %q: %v", path, err)
		}
		if st.GetState() != pb.State_STATE_UNLOCKED {
			t.Fatalf("Status through %q: %v", path, st)
		}
	}
	if ua := <-s.agent; len(ua) < len("byokd-client/") || ua[:len("byokd-client/")] != "byokd-client/" {
		t.Fatalf("user agent %q does not name the client", ua)
	}
	c, err := keyprovider.Dial(".dev/keyprovider.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Socket() != abs {
		t.Fatalf("Socket() = %q, want %q", c.Socket(), abs)
	}
}

// TestDialDefault: no path is the node's socket.
func TestDialDefault(t *testing.T) {
	c, err := keyprovider.Dial("")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Socket() != keyprovider.DefaultSocket {
		t.Fatalf("Socket() = %q, want %q", c.Socket(), keyprovider.DefaultSocket)
	}
}

// TestErrKinds: byokd's answers, through a real gRPC connection, are told
// apart with errors.Is.
func TestErrKinds(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		code codes.Code
		kind error
	}{
		{codes.FailedPrecondition, keyprovider.ErrLocked},
		{codes.PermissionDenied, keyprovider.ErrRefused},
		{codes.Unavailable, keyprovider.ErrUnavailable},
		{codes.InvalidArgument, nil},
	} {
		path := serve(t, dir, tc.code.String()+".sock", &server{err: status.Error(tc.code, "node locked: root key disabled"), agent: make(chan string, 1)})
		_, err := status1(t, path)
		err = keyprovider.Err(err)
		var e *keyprovider.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Error() != "node locked: root key disabled" {
			t.Fatalf("%v: Err gave %#v", tc.code, err)
		}
		for _, k := range []error{keyprovider.ErrLocked, keyprovider.ErrRefused, keyprovider.ErrUnavailable} {
			if got := errors.Is(err, k); got != (k == tc.kind) {
				t.Errorf("%v: errors.Is(err, %v) = %v", tc.code, k, got)
			}
		}
	}
	// Nothing listening: unavailable.
	_, err := status1(t, filepath.Join(dir, "nobody.sock"))
	if !errors.Is(keyprovider.Err(err), keyprovider.ErrUnavailable) {
		t.Fatalf("no server: %v", err)
	}
	if keyprovider.Err(nil) != nil {
		t.Fatal("Err(nil) is not nil")
	}
	plain := errors.New("plain")
	if keyprovider.Err(plain) != plain {
		t.Fatal("an error without a status changed")
	}
}

func TestModesAndServing(t *testing.T) {
	for _, m := range keyprovider.Modes() {
		if got, err := keyprovider.ParseMode(string(m)); err != nil || got != m {
			t.Fatalf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := keyprovider.ParseMode("Release"); err == nil {
		t.Fatal("ParseMode accepted Release")
	}
	want := map[pb.State]bool{pb.State_STATE_UNLOCKED: true, pb.State_STATE_DEGRADED: true}
	for v := range pb.State_name {
		s := pb.State(v)
		if keyprovider.Serving(s) != want[s] {
			t.Errorf("Serving(%v) = %v", s, !want[s])
		}
	}
}
