// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/byokd/byokd/internal/atomicfile"
)

// maxSize bounds what Load reads; a real file is well under 1 KiB.
const maxSize = 1 << 20

// lockPoll is how often a waiting writer retries the flock.
const lockPoll = 20 * time.Millisecond

func (s *Store) dirfd() int { return int(s.d.Fd()) }

// readFile reads name in the state folder without following a symlink,
// and only if it is a regular file that Open's rules allow.
func (s *Store) readFile(name string) ([]byte, error) {
	// The fstatat keeps a device node or fifo from even being opened; the
	// fstat after the open is what counts.
	var st unix.Stat_t
	err := unix.Fstatat(s.dirfd(), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	if err := checkFile(&st); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(s.dirfd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: a symlink, not followed", ErrUnsafe)
	case err != nil:
		return nil, err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, name))
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if err := checkFile(&st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, maxSize)
	}
	return b, nil
}

// checkFile refuses anything but a regular file that only its owner, this
// process's user or root, can read or write.
func checkFile(st *unix.Stat_t) error {
	switch t := uint32(st.Mode) & unix.S_IFMT; t {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return fmt.Errorf("%w: a symlink, not followed", ErrUnsafe)
	default:
		return fmt.Errorf("%w: not a regular file but a %s", ErrUnsafe, kind(t))
	}
	if perm := uint32(st.Mode) & 0o777; perm&0o077 != 0 {
		return fmt.Errorf("%w: mode %04o lets group or others in; it must be 0600", ErrUnsafe, perm)
	}
	return checkOwner(st)
}

func kind(t uint32) string {
	switch t {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of type %#o", t)
}

// writeAtomic puts b under name, 0600, through atomicfile: a crash or
// failure at any point leaves either the old file or the new one, whole.
// It renames over name (replace) or links to name, which fails with
// ErrExists if anything has the name (create). The caller holds the
// writers' lock (acquire).
func (s *Store) writeAtomic(name string, b []byte, replace bool) error {
	d := atomicfile.Dir{File: s.d, Steps: s.fs}
	if replace {
		return d.Write(name, b, 0o600)
	}
	err := d.Create(name, b, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// With the link's error, and the temp file's removal's if that
		// failed too.
		return errors.Join(ErrExists, err)
	}
	return err
}

// removeStale removes temp files that a crashed writer left. The caller
// holds the writers' lock (acquire), so no live writer owns one. Failures
// are left for the next write: stale temp files hold only ciphertext the
// real files have or no longer need.
func (s *Store) removeStale() {
	d := atomicfile.Dir{File: s.d, Steps: s.fs}
	d.RemoveTemps(s.name, s.name+PrevSuffix, IdentityFileName, IdentityFileName+PrevSuffix)
}

// acquire takes the writers' lock: the Store's mutex and an exclusive flock
// on .dek.lock, so that no other Store, in this process or another, writes
// at the same time; then it clears stale temp files. It waits up to the
// lock timeout, then fails with ErrBusy. release gives the lock back.
func (s *Store) acquire() (release func(), err error) {
	s.mu.Lock()
	defer func() {
		if err != nil {
			s.mu.Unlock()
		}
	}()
	path := filepath.Join(s.dir, lockName)
	fd, err := unix.Openat(s.dirfd(), lockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("lock %s: %w: a symlink, not followed", path, ErrUnsafe)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if t := uint32(st.Mode) & unix.S_IFMT; t != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w: not a regular file but a %s", path, ErrUnsafe, kind(t))
	}
	// flock has no timeout and cannot be interrupted from Go, so wait by
	// polling a non-blocking attempt; writes are rare and short.
	deadline := time.Now().Add(s.lockTimeout)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w (waited %v)", path, ErrBusy, s.lockTimeout)
		}
		time.Sleep(lockPoll)
	}
	s.removeStale()
	return func() {
		unix.Close(fd) // closing the last descriptor releases the flock
		s.mu.Unlock()
	}, nil
}
