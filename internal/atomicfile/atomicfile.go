// SPDX-License-Identifier: Apache-2.0

//go:build unix

package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Steps are the calls of a write that can fail on a real disk. Tests
// replace them to make each one fail in turn and prove the old file
// survives (atomicfiletest.Failures has one failure for each).
type Steps struct {
	Write   func(f *os.File, b []byte) (int, error)
	Sync    func(f *os.File) error
	Close   func(f *os.File) error
	Rename  func(dirfd int, from, to string) error
	Link    func(dirfd int, from, to string) error
	SyncDir func(d *os.File) error
}

// OS returns the real steps.
func OS() Steps {
	return Steps{
		Write: func(f *os.File, b []byte) (int, error) { return f.Write(b) },
		Sync:  func(f *os.File) error { return f.Sync() },
		Close: func(f *os.File) error { return f.Close() },
		Rename: func(dirfd int, from, to string) error {
			return unix.Renameat(dirfd, from, dirfd, to)
		},
		// link(2) fails with EEXIST when anything, a dangling symlink
		// included, has the target name: this is O_EXCL on the final
		// name, and the file appears there whole or not at all.
		Link: func(dirfd int, from, to string) error {
			return unix.Linkat(dirfd, from, dirfd, to, 0)
		},
		SyncDir: func(d *os.File) error { return d.Sync() },
	}
}

// Dir is a folder files are put into by name, through its open descriptor:
// a folder swapped in at its path afterwards is never written.
type Dir struct {
	// File is the open folder (read-only, O_DIRECTORY). Dir never closes
	// it.
	File  *os.File
	Steps Steps
}

// NewDir returns the open folder f with the real steps.
func NewDir(f *os.File) Dir { return Dir{File: f, Steps: OS()} }

// Write puts data at path with exactly mode, replacing what is there (a
// symlink at path is replaced, not followed). See the package doc for how.
func Write(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(filepath.Dir(path), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return NewDir(f).Write(filepath.Base(path), data, mode)
}

// Write puts data under name with exactly mode, replacing what is there.
// If it fails, name is unchanged, except when only the final folder fsync
// failed: then the new file is in place.
func (d Dir) Write(name string, data []byte, mode os.FileMode) error {
	tmp, err := d.writeTemp(name, data, mode)
	if err != nil {
		return err
	}
	if err := d.Steps.Rename(d.fd(), tmp, name); err != nil {
		return errors.Join(fmt.Errorf("rename %s to %s: %w", tmp, name, err), d.remove(tmp))
	}
	return d.syncDir()
}

// Create puts data under name with exactly mode only if nothing (not even a
// dangling symlink) has the name: then it fails with an error that matches
// fs.ErrExist and leaves what is there alone. If it fails otherwise, there
// is no file under name, except when only the final folder fsync failed:
// then the new file is in place.
func (d Dir) Create(name string, data []byte, mode os.FileMode) error {
	tmp, err := d.writeTemp(name, data, mode)
	if err != nil {
		return err
	}
	if err := d.Steps.Link(d.fd(), tmp, name); err != nil {
		return errors.Join(fmt.Errorf("link %s to %s: %w", tmp, name, err), d.remove(tmp))
	}
	// The file is in place under its final name. A temporary name left
	// behind holds nothing more and goes with RemoveTemps.
	_ = d.remove(tmp)
	return d.syncDir()
}

// RemoveTemps removes the temporary files that a crashed writer left for
// any of names. Only a caller that keeps every other writer of the folder
// out (a lock) may call it, or it may remove a live writer's file. Failures
// are left for the next call.
func (d Dir) RemoveTemps(names ...string) {
	fd, err := unix.Openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), d.File.Name())
	defer f.Close()
	ents, err := f.Readdirnames(-1)
	if err != nil {
		return
	}
	for _, e := range ents {
		for _, n := range names {
			if strings.HasPrefix(e, TempPrefix(n)) {
				_ = d.remove(e) // unlinkat without AT_REMOVEDIR leaves folders alone
				break
			}
		}
	}
}

func (d Dir) fd() int { return int(d.File.Fd()) }

func (d Dir) path(name string) string { return filepath.Join(d.File.Name(), name) }

// checkName refuses what is not a plain name in the folder.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("invalid file name %q: not a plain name in a folder", name)
	}
	return nil
}

// tempName is a new temporary name for name. 32 random bits are plenty:
// a collision fails O_EXCL (or bind) rather than harm anything. The name is
// no longer than the socket's temporary name always was, which matters to
// a unix socket's path, limited to 108 bytes.
func tempName(name string) string {
	var r [4]byte
	_, _ = rand.Read(r[:]) // never fails
	return TempPrefix(name) + hex.EncodeToString(r[:])
}

// writeTemp writes data to a new temporary file for name and returns its
// name; on failure nothing is left.
func (d Dir) writeTemp(name string, data []byte, mode os.FileMode) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	f, tmp, err := d.createTemp(name, mode)
	if err != nil {
		return "", err
	}
	if err := d.fill(f, data); err != nil {
		return "", errors.Join(err, d.remove(tmp))
	}
	return tmp, nil
}

// createTemp creates a new, empty temporary file for name with exactly
// mode.
func (d Dir) createTemp(name string, mode os.FileMode) (*os.File, string, error) {
	for range 10 {
		tmp := tempName(name)
		// 0600 until the fchmod: never looser than the mode asked.
		fd, err := unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temp file in %s: %w", d.File.Name(), err)
		}
		// The umask may have taken bits away; set exactly mode.
		if err := unix.Fchmod(fd, sysMode(mode)); err != nil {
			unix.Close(fd)
			return nil, "", errors.Join(fmt.Errorf("chmod temp file %s: %w", d.path(tmp), err), d.remove(tmp))
		}
		return os.NewFile(uintptr(fd), d.path(tmp)), tmp, nil
	}
	return nil, "", fmt.Errorf("create temp file in %s: too many name collisions", d.File.Name())
}

// fill writes b to f, syncs and closes it; f is closed whatever happens.
func (d Dir) fill(f *os.File, b []byte) error {
	n, err := d.Steps.Write(f, b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := d.Steps.Sync(f); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := d.Steps.Close(f); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return nil
}

func (d Dir) syncDir() error {
	if err := d.Steps.SyncDir(d.File); err != nil {
		return fmt.Errorf("fsync folder %s: %w", d.File.Name(), err)
	}
	return nil
}

// remove removes the temporary file tmp; it is not an error if it is gone.
func (d Dir) remove(tmp string) error {
	if err := unix.Unlinkat(d.fd(), tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove temp file %s: %w", d.path(tmp), err)
	}
	return nil
}

// sysMode is mode as chmod(2) takes it, as os.Chmod converts it.
func sysMode(mode os.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		m |= unix.S_ISUID
	}
	if mode&os.ModeSetgid != 0 {
		m |= unix.S_ISGID
	}
	if mode&os.ModeSticky != 0 {
		m |= unix.S_ISVTX
	}
	return m
}
