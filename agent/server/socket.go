// SPDX-License-Identifier: Apache-2.0

package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/byokd/byokd/internal/atomicfile"
)

// ErrUnsafePath is returned when something other than a stale socket of
// ours sits at the socket path: a symlink, a file, a directory.
var ErrUnsafePath = errors.New("unsafe socket path")

// SocketListener is the key provider's unix socket.
type SocketListener struct {
	*net.UnixListener
	path string
	ino  uint64
}

// Listen creates the unix socket at path with mode and, when gid >= 0, that
// group. A stale socket (nothing accepting on it) is replaced; a live one, a
// symlink or any other file is an error and is left alone. The socket is
// bound under a temporary name and renamed into place once its mode and
// group are set, so it is never reachable with looser permissions
// (atomicfile.Place).
func Listen(path string, mode os.FileMode, gid int) (*SocketListener, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	var l *net.UnixListener
	bind := func(tmp string) (err error) {
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
		if err != nil {
			return err
		}
		l.SetUnlinkOnClose(false)
		return nil
	}
	if err := atomicfile.Place(path, mode, gid, bind); err != nil {
		if l != nil {
			l.Close()
		}
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return &SocketListener{UnixListener: l, path: path, ino: inode(fi)}, nil
}

// Close stops listening and removes the socket file, if it is still ours.
func (l *SocketListener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && fi.Mode()&fs.ModeSocket != 0 && inode(fi) == l.ino {
		_ = os.Remove(l.path)
	}
	return err
}

// Path is where the socket is.
func (l *SocketListener) Path() string { return l.path }

func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket path %s: %w", path, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink; refusing to follow or replace it", ErrUnsafePath, path)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%w: %s exists and is not a socket (%v); refusing to replace it", ErrUnsafePath, path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: another process is serving on %s", ErrUnsafePath, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("probe socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
