// SPDX-License-Identifier: Apache-2.0

// Package wdek keeps the node's wrapped data encryption key in one JSON
// file in the state folder, written atomically and never overwritten by
// accident or through a link.
package wdek

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/byokd/byokd/internal/atomicfile"
)

// FileName is the default name of the wrapped key file in the state folder.
const FileName = "dek.json"

// PrevSuffix is appended to the file name for the copy of the previous
// version that Replace keeps.
const PrevSuffix = ".prev"

// lockName is the file writers flock, in the state folder.
const lockName = ".dek.lock"

// DefaultLockTimeout is how long a write waits for another writer to
// finish before it gives up with ErrBusy.
const DefaultLockTimeout = 10 * time.Second

// Errors callers branch on.
var (
	// ErrNotExist: there is no wrapped key file yet. It wraps
	// fs.ErrNotExist.
	ErrNotExist = fmt.Errorf("no wrapped key file: %w", fs.ErrNotExist)
	// ErrUnsafe: the state folder or a file in it is a symlink, not the
	// kind of file expected, owned by another user or open to group or
	// others. It is neither read through nor written.
	ErrUnsafe = errors.New("unsafe path")
	// ErrCorrupt: the file is not a valid record. byokd never repairs or
	// replaces it.
	ErrCorrupt = errors.New("corrupt wrapped key file")
	// ErrExists: Create found a file already in place, and left it alone.
	ErrExists = errors.New("wrapped key file already exists")
	// ErrForeign: the record belongs to another root key, instance or
	// cluster. byokd stays locked rather than provision over it.
	ErrForeign = errors.New("wrapped key file belongs to another root key, instance or cluster")
	// ErrBusy: another writer held the lock for longer than the lock
	// timeout.
	ErrBusy = errors.New("another writer holds the wrapped key lock")
)

// Store is the wrapped key file in a state folder. Its methods are safe for
// concurrent use, and writes are serialised with other processes through
// an flock on the folder's .dek.lock.
type Store struct {
	dir         string
	name        string
	lockTimeout time.Duration
	fs          atomicfile.Steps // the write's steps; tests make them fail

	// d is the state folder, opened and checked by Open. Every file
	// operation is relative to it, so a folder swapped in after the check
	// is never used.
	d  *os.File
	mu sync.Mutex // one writer per Store; the flock covers other Stores
}

// Option changes how Open sets up a Store.
type Option func(*Store)

// WithFileName sets the wrapped key file's name in the state folder,
// FileName by default. It must be a plain name, without a separator.
func WithFileName(name string) Option {
	return func(s *Store) { s.name = name }
}

// WithLockTimeout sets how long a write waits for another writer,
// DefaultLockTimeout by default.
func WithLockTimeout(d time.Duration) Option {
	return func(s *Store) { s.lockTimeout = d }
}

// Open checks the state folder and keeps it open: it must exist and be a
// directory, not a symlink, owned by this process's user or by root, and
// not writable by group or others. Close releases it.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{dir: filepath.Clean(dir), name: FileName, lockTimeout: DefaultLockTimeout, fs: atomicfile.OS()}
	for _, o := range opts {
		o(s)
	}
	if s.name == "" || s.name == "." || s.name == ".." || strings.ContainsRune(s.name, '/') {
		return nil, fmt.Errorf("open state folder %s: invalid file name %q", s.dir, s.name)
	}
	fi, err := os.Lstat(s.dir)
	if err != nil {
		return nil, fmt.Errorf("open state folder: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("open state folder %s: %w: a symlink, not followed", s.dir, ErrUnsafe)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open state folder %s: %w: not a directory", s.dir, ErrUnsafe)
	}
	// O_NOFOLLOW and the fstat below make the checks apply to the folder
	// actually opened, even if the path changed since the Lstat.
	fd, err := unix.Open(s.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open state folder %s: %w", s.dir, err)
	}
	d := os.NewFile(uintptr(fd), s.dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		d.Close()
		return nil, fmt.Errorf("open state folder %s: %w", s.dir, err)
	}
	if err := checkDir(&st); err != nil {
		d.Close()
		return nil, fmt.Errorf("open state folder %s: %w", s.dir, err)
	}
	s.d = d
	return s, nil
}

// checkDir applies Open's rules to the opened folder.
func checkDir(st *unix.Stat_t) error {
	if uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%w: not a directory", ErrUnsafe)
	}
	if perm := uint32(st.Mode) & 0o777; perm&0o022 != 0 {
		return fmt.Errorf("%w: mode %04o lets group or others write it", ErrUnsafe, perm)
	}
	return checkOwner(st)
}

// checkOwner refuses what neither this process's user nor root owns:
// whoever owns it could change the wrapped key under byokd.
func checkOwner(st *unix.Stat_t) error {
	if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("%w: owned by uid %d, not by root or by uid %d that byokd runs as", ErrUnsafe, st.Uid, uid)
	}
	return nil
}

// Close releases the state folder. The Store is unusable afterwards.
func (s *Store) Close() error {
	return s.d.Close()
}

// Path is the wrapped key file.
func (s *Store) Path() string { return filepath.Join(s.dir, s.name) }

// Load reads and validates the wrapped key file. It fails with ErrNotExist
// when there is none, ErrUnsafe when the path is a symlink (never
// followed), not a regular file, owned by another user or open to group or
// others, and ErrCorrupt when the content is not a valid schema 1 record.
func (s *Store) Load() (*Record, error) {
	rec, _, err := s.load(s.name)
	return rec, err
}

// load reads name in the state folder and returns the record and the
// file's bytes.
func (s *Store) load(name string) (*Record, []byte, error) {
	path := filepath.Join(s.dir, name)
	b, err := s.readFile(name)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", path, err)
	}
	rec, err := parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w: %v", path, ErrCorrupt, err)
	}
	return rec, b, nil
}

// Check fails with ErrForeign, naming both identities, when rec belongs to
// another root key, instance or cluster than want.
func (s *Store) Check(rec *Record, want Identity) error {
	if got := rec.Identity(); got != want {
		return fmt.Errorf("%w: %s holds %s; this node is configured for %s", ErrForeign, s.Path(), got, want)
	}
	return nil
}

// Create writes rec only if there is no wrapped key file yet; it fails with
// ErrExists, and changes nothing, when any file (or symlink) is in place.
func (s *Store) Create(rec *Record) error {
	path := s.Path()
	b, err := encode(rec)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	release, err := s.acquire()
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer release()
	if err := s.writeAtomic(s.name, b, false); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// Replace writes rec over the wrapped key file, after a root key rotation
// re-wrapped the same DEK. The file in place must load and belong to the
// same identity as rec (ErrForeign otherwise); its bytes are first kept,
// atomically, as the file name plus PrevSuffix.
//
// If Replace fails, the file in place is unchanged, except when only the
// final folder fsync failed: then the new file is in place and the old one
// is byte for byte in the .prev file.
func (s *Store) Replace(rec *Record) error {
	path := s.Path()
	b, err := encode(rec)
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	release, err := s.acquire()
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	defer release()
	old, prev, err := s.load(s.name)
	if err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	if got, want := old.Identity(), rec.Identity(); got != want {
		return fmt.Errorf("replace %s: %w: the file holds %s, the new record %s", path, ErrForeign, got, want)
	}
	if err := s.writeAtomic(s.name+PrevSuffix, prev, true); err != nil {
		return fmt.Errorf("replace %s: keep the previous version: %w", path, err)
	}
	if err := s.writeAtomic(s.name, b, true); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
