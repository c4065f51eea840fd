// SPDX-License-Identifier: Apache-2.0

package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Place puts at path a file that create makes, such as a unix socket bound
// to the path create is given: create makes it under a temporary name in
// path's folder; Place sets exactly mode and, when gid >= 0, that group,
// then renames it over path. What create made is never reachable at path
// with looser permissions; a failure after create removes the temporary
// name. The folder is not fsynced: what Place puts (a socket) lives no
// longer than the process that made it. Place needs no read permission on
// the folder.
func Place(path string, mode os.FileMode, gid int, create func(tmp string) error) error {
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	return NewDir(f).Place(filepath.Base(path), mode, gid, create)
}

// Place is the package-level Place in the folder d.
func (d Dir) Place(name string, mode os.FileMode, gid int, create func(tmp string) error) error {
	if err := checkName(name); err != nil {
		return err
	}
	tmp := tempName(name)
	// A failed create removes nothing: what has the temporary name, if
	// anything, is not known to be ours.
	if err := create(filepath.Join(d.File.Name(), tmp)); err != nil {
		return err
	}
	if err := unix.Fchmodat(d.fd(), tmp, sysMode(mode), 0); err != nil {
		return errors.Join(fmt.Errorf("chmod %s: %w", d.path(tmp), err), d.remove(tmp))
	}
	if gid >= 0 {
		if err := unix.Fchownat(d.fd(), tmp, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errors.Join(fmt.Errorf("chown %s to group %d: %w", d.path(tmp), gid, err), d.remove(tmp))
		}
	}
	if err := d.Steps.Rename(d.fd(), tmp, name); err != nil {
		return errors.Join(fmt.Errorf("rename %s to %s: %w", tmp, name, err), d.remove(tmp))
	}
	return nil
}
