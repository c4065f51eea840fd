// Package wdek keeps the node's wrapped data encryption key in one JSON file,
// written atomically and never lost, overwritten or followed through a link.
package wdek

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Schema is the file format version this package writes and reads.
const Schema = 1

// FileName is the wrapped key file in the state folder.
const FileName = "dek.json"

// Errors callers branch on.
var (
	// ErrNotExist: no wrapped key file yet.
	ErrNotExist = fmt.Errorf("no wrapped key file: %w", fs.ErrNotExist)
	// ErrUnsafe: the path is a symlink, not a regular file, or readable
	// by others; it is neither read nor replaced.
	ErrUnsafe = errors.New("unsafe wrapped key file")
	// ErrCorrupt: the file cannot be parsed or lacks fields. byokd never
	// repairs or replaces it.
	ErrCorrupt = errors.New("corrupt wrapped key file")
	// ErrExists: Create found a file already there.
	ErrExists = errors.New("wrapped key file already exists")
)

// Record is the file's content. The ciphertext is Key Protect's wrapped
// DEK: not secret, but logs name it by Fingerprint only.
type Record struct {
	Schema     int       `json:"schema"`
	RootKeyID  string    `json:"root_key_id"`
	InstanceID string    `json:"instance_id"`
	ClusterID  string    `json:"cluster_id"`
	Ciphertext string    `json:"ciphertext"`
	KeyVersion string    `json:"key_version"`
	AAD        []string  `json:"aad"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
}

// Validate checks that every field is there.
func (r *Record) Validate() error {
	switch {
	case r.Schema != Schema:
		return fmt.Errorf("unknown schema %d (want %d)", r.Schema, Schema)
	case r.RootKeyID == "", r.InstanceID == "", r.ClusterID == "":
		return errors.New("root_key_id, instance_id and cluster_id are required")
	case r.Ciphertext == "":
		return errors.New("ciphertext is required")
	case len(r.AAD) == 0:
		return errors.New("aad is required")
	case r.Created.IsZero():
		return errors.New("created is required")
	}
	return nil
}

// Fingerprint names the ciphertext in logs: 12 hex digits of its SHA-256.
func (r *Record) Fingerprint() string {
	sum := sha256.Sum256([]byte(r.Ciphertext))
	return hex.EncodeToString(sum[:6])
}

// fsys are the filesystem steps of an atomic write, replaceable in tests to
// make each one fail.
type fsys struct {
	write    func(f *os.File, b []byte) (int, error)
	sync     func(f *os.File) error
	rename   func(from, to string) error
	syncDir  func(dir string) error
	linkOnce func(from, to string) error // create-only rename
}

var realFS = fsys{
	write:  func(f *os.File, b []byte) (int, error) { return f.Write(b) },
	sync:   func(f *os.File) error { return f.Sync() },
	rename: os.Rename,
	syncDir: func(dir string) error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	},
	// link(2) fails with EEXIST when the target exists: the new file
	// appears whole under its final name, or not at all.
	linkOnce: os.Link,
}

// Store is the wrapped key file in a state folder.
type Store struct {
	dir  string
	path string
	fs   fsys
	mu   sync.Mutex
}

// Open checks the state folder: a real directory (not a symlink), owned by
// this process's user or root, that group and others cannot write.
func Open(dir string) (*Store, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("state folder: %w", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("%w: state folder %s is a symlink", ErrUnsafe, dir)
	case !fi.IsDir():
		return nil, fmt.Errorf("%w: state folder %s is not a directory", ErrUnsafe, dir)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("%w: state folder %s has mode %04o; group and others must not write it", ErrUnsafe, dir, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*unix.Stat_t); ok && st.Uid != uint32(os.Getuid()) && st.Uid != 0 {
		return nil, fmt.Errorf("%w: state folder %s is owned by uid %d", ErrUnsafe, dir, st.Uid)
	}
	// Temp files a crash left behind hold nothing the real files lack.
	if stale, _ := filepath.Glob(filepath.Join(dir, "."+FileName+"*.tmp-*")); len(stale) > 0 {
		for _, f := range stale {
			_ = os.Remove(f)
		}
	}
	return &Store{dir: dir, path: filepath.Join(dir, FileName), fs: realFS}, nil
}

// Path is the wrapped key file.
func (s *Store) Path() string { return s.path }

// Load reads the wrapped key file. It never follows a symlink.
func (s *Store) Load() (*Record, error) {
	return load(s.path)
}

func load(path string) (*Record, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: %s is a symlink; refusing to follow it", ErrUnsafe, path)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%v)", ErrUnsafe, path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; it must be 0600", ErrUnsafe, path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return parse(path, b)
}

func parse(path string, b []byte) (*Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the JSON object", ErrCorrupt, path)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return &r, nil
}

// Create writes rec only if no wrapped key file exists; it never
// overwrites one.
func (s *Store) Create(rec *Record) error {
	return s.write(rec, false)
}

// Replace writes rec over the existing file (after a root key rotation),
// keeping the previous content as dek.json.prev.
func (s *Store) Replace(rec *Record) error {
	return s.write(rec, true)
}

func (s *Store) write(rec *Record, replace bool) error {
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("write wrapped key: %w", err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write wrapped key: %w", err)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.flock()
	if err != nil {
		return err
	}
	defer unlock()
	if !replace {
		return s.atomic(s.path, b, false)
	}
	old, err := s.Load()
	if err != nil {
		return fmt.Errorf("replace wrapped key: %w", err)
	}
	prev, _ := json.MarshalIndent(old, "", "  ")
	if err := s.atomic(s.path+".prev", append(prev, '\n'), true); err != nil {
		return fmt.Errorf("keep previous wrapped key: %w", err)
	}
	return s.atomic(s.path, b, true)
}

// flock takes an exclusive lock on .dek.lock, so two byokd processes never
// write at once.
func (s *Store) flock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".dek.lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state folder: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state folder: %w", err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// atomic writes b to path so that a crash anywhere leaves the old file or
// the new one: temp file (O_EXCL, 0600), write, fsync, rename (or link for
// create-only), fsync the folder. On any failure the temp file is removed.
func (s *Store) atomic(path string, b []byte, replace bool) error {
	f, err := os.CreateTemp(s.dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename or link, this removes nothing or the extra name
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := s.fs.write(f, b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := s.fs.sync(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if replace {
		if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file; not replacing it", ErrUnsafe, path)
		}
		if err := s.fs.rename(tmp, path); err != nil {
			return fmt.Errorf("rename into %s: %w", path, err)
		}
	} else if err := s.fs.linkOnce(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := s.fs.syncDir(s.dir); err != nil {
		return fmt.Errorf("fsync folder %s: %w", s.dir, err)
	}
	return nil
}
