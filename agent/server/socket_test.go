// SPDX-License-Identifier: Apache-2.0

package server

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestListenSetsModeAndReplacesOnlyStaleSockets(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "kp.sock")
	l, err := Listen(path, 0o640, -1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	if _, err := Listen(path, 0o640, -1); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("a live socket was replaced: %v", err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatal("Close left the socket file")
	}

	// A stale socket (nothing listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l2, err := Listen(path, 0o600, -1)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if m, _ := filepath.Glob(filepath.Join(dir, ".*")); len(m) != 0 {
		t.Fatalf("temporary sockets left: %v", m)
	}
}

func TestListenRefusesSymlinksAndFiles(t *testing.T) {
	dir := shortDir(t)
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(link, 0o600, -1); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("symlink: %v", err)
	}
	if _, err := Listen(target, 0o600, -1); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatal("the file behind the path was touched")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the symlink was replaced")
	}
}
