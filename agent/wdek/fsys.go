package wdek

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxSize bounds what Load reads; a real file is well under 1 KiB.
const maxSize = 1 << 20

// lockPoll is how often a waiting writer retries the flock.
const lockPoll = 20 * time.Millisecond

// fsys holds the steps of an atomic write that can fail on a real disk.
// Tests replace them to make each step fail and prove the old file
// survives.
type fsys struct {
	write   func(f *os.File, b []byte) (int, error)
	sync    func(f *os.File) error
	close   func(f *os.File) error
	rename  func(dirfd int, from, to string) error
	link    func(dirfd int, from, to string) error
	syncDir func(d *os.File) error
}

var osFS = fsys{
	write: func(f *os.File, b []byte) (int, error) { return f.Write(b) },
	sync:  func(f *os.File) error { return f.Sync() },
	close: func(f *os.File) error { return f.Close() },
	rename: func(dirfd int, from, to string) error {
		return unix.Renameat(dirfd, from, dirfd, to)
	},
	// link(2) fails with EEXIST when anything, a dangling symlink
	// included, has the target name: this is O_EXCL on the final name,
	// and the file appears there whole or not at all.
	link: func(dirfd int, from, to string) error {
		return unix.Linkat(dirfd, from, dirfd, to, 0)
	},
	syncDir: func(d *os.File) error { return d.Sync() },
}

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

// writeAtomic puts b under name so that a crash or failure at any point
// leaves either the old file or the new one, whole: a temp file in the
// same folder (O_EXCL|O_NOFOLLOW, 0600), write, fsync, close, then rename
// over name (replace) or link to name, which fails if name exists
// (create), then fsync the folder. Until the rename or link, every failure
// removes the temp file and leaves name untouched. The caller holds the
// lock.
func (s *Store) writeAtomic(name string, b []byte, replace bool) error {
	f, tmp, err := s.createTemp(name)
	if err != nil {
		return err
	}
	if err := s.fill(f, b); err != nil {
		return errors.Join(err, s.remove(tmp))
	}
	if replace {
		if err := s.fs.rename(s.dirfd(), tmp, name); err != nil {
			return errors.Join(fmt.Errorf("rename %s to %s: %w", tmp, name, err), s.remove(tmp))
		}
	} else {
		err := s.fs.link(s.dirfd(), tmp, name)
		if errors.Is(err, unix.EEXIST) {
			return errors.Join(ErrExists, s.remove(tmp))
		}
		if err != nil {
			return errors.Join(fmt.Errorf("link %s to %s: %w", tmp, name, err), s.remove(tmp))
		}
		// The file is in place under its final name. A temp name left
		// behind holds nothing more and goes with the next write.
		_ = s.remove(tmp)
	}
	if err := s.fs.syncDir(s.d); err != nil {
		return fmt.Errorf("fsync state folder %s: %w", s.dir, err)
	}
	return nil
}

// createTemp creates a new, empty 0600 temp file for name.
func (s *Store) createTemp(name string) (*os.File, string, error) {
	for range 10 {
		var r [8]byte
		_, _ = rand.Read(r[:]) // never fails
		tmp := tempPrefix(name) + hex.EncodeToString(r[:])
		fd, err := unix.Openat(s.dirfd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temp file in %s: %w", s.dir, err)
		}
		// The umask may have taken bits away; set exactly 0600.
		if err := unix.Fchmod(fd, 0o600); err != nil {
			unix.Close(fd)
			return nil, "", errors.Join(fmt.Errorf("chmod temp file %s: %w", tmp, err), s.remove(tmp))
		}
		return os.NewFile(uintptr(fd), filepath.Join(s.dir, tmp)), tmp, nil
	}
	return nil, "", fmt.Errorf("create temp file in %s: too many name collisions", s.dir)
}

func tempPrefix(name string) string { return "." + name + ".tmp-" }

// fill writes b to f, syncs and closes it; f is closed whatever happens.
func (s *Store) fill(f *os.File, b []byte) error {
	n, err := s.fs.write(f, b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := s.fs.sync(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := s.fs.close(f); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return nil
}

// remove removes the temp file tmp; it is not an error if it is gone.
func (s *Store) remove(tmp string) error {
	if err := unix.Unlinkat(s.dirfd(), tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove temp file %s: %w", filepath.Join(s.dir, tmp), err)
	}
	return nil
}

// removeStale removes temp files that a crashed writer left. The caller
// holds the lock, so no live writer owns one. Failures are left for the
// next write: stale temp files hold only ciphertext the real files have or
// no longer need.
func (s *Store) removeStale() {
	fd, err := unix.Openat(s.dirfd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	d := os.NewFile(uintptr(fd), s.dir)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return
	}
	for _, n := range names {
		if strings.HasPrefix(n, tempPrefix(s.name)) || strings.HasPrefix(n, tempPrefix(s.name+PrevSuffix)) ||
			strings.HasPrefix(n, tempPrefix(IdentityFileName)) || strings.HasPrefix(n, tempPrefix(IdentityFileName+PrevSuffix)) {
			_ = s.remove(n) // unlinkat without AT_REMOVEDIR leaves directories alone
		}
	}
}

// lock takes the Store's mutex and an exclusive flock on .dek.lock, so that
// no other Store, in this process or another, writes at the same time, and
// then clears stale temp files. It waits up to the lock timeout, then fails
// with ErrBusy.
func (s *Store) lock() (unlock func(), err error) {
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
