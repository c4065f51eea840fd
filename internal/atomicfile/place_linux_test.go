// SPDX-License-Identifier: Apache-2.0

package atomicfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/byokd/byokd/internal/atomicfile"
	"github.com/byokd/byokd/internal/atomicfile/atomicfiletest"
)

func TestPlaceSetsModeAndGroupBeforeTheNameAppears(t *testing.T) {
	gid := os.Getegid()
	if os.Geteuid() == 0 {
		gid = 4242 // root may give it any group: prove the change
	}
	d := openDir(t, false)
	var tmp string
	create := func(p string) error {
		tmp = p
		// The temporary name is no longer than the socket's always was
		// (a dot, a dot and 12 hex digits): a unix socket's path is
		// limited to 108 bytes.
		if n := len(filepath.Base(p)); n > len(name)+14 {
			t.Errorf("temporary name %s is %d bytes, more than %d", p, n, len(name)+14)
		}
		if filepath.Dir(p) != d.File.Name() {
			t.Errorf("temporary name %s not in the folder", p)
		}
		return os.WriteFile(p, newData, 0o666)
	}
	rename := d.Steps.Rename
	d.Steps.Rename = func(dirfd int, from, to string) error {
		fi, err := os.Lstat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Gid != uint32(gid) {
			t.Errorf("before the rename: mode %v, group %d; want 0640, group %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, gid)
		}
		if _, err := os.Lstat(pathOf(d)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the name appeared before the rename: %v", err)
		}
		return rename(dirfd, from, to)
	}
	if err := d.Place(name, 0o640, gid, create); err != nil {
		t.Fatal(err)
	}
	want(t, pathOf(d), newData, 0o640)
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the temporary name is still there: %v", err)
	}
}

func TestFailedPlaceRemovesTheTemporaryNameAndLeavesTheOldFile(t *testing.T) {
	d := openDir(t, true)
	d.Steps.Rename = func(int, string, string) error { return atomicfiletest.ErrInjected }
	create := func(p string) error { return os.WriteFile(p, newData, 0o600) }
	if err := d.Place(name, 0o600, -1, create); !errors.Is(err, atomicfiletest.ErrInjected) {
		t.Fatalf("Place() = %v, want the rename's error", err)
	}
	want(t, pathOf(d), oldData, 0o640)
	noTemps(t, d)
}

func TestPlaceRemovesNothingWhenCreateFails(t *testing.T) {
	d := openDir(t, true)
	var tmp string
	create := func(p string) error {
		// Whatever has the name when create fails is not known to be
		// Place's: another process's, say.
		tmp = p
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return atomicfiletest.ErrInjected
	}
	if err := d.Place(name, 0o600, -1, create); !errors.Is(err, atomicfiletest.ErrInjected) {
		t.Fatalf("Place() = %v, want create's error", err)
	}
	if _, err := os.Lstat(tmp); err != nil {
		t.Fatalf("Place removed what it did not make: %v", err)
	}
	want(t, pathOf(d), oldData, 0o640)
}

func TestPlaceNeedsNoReadPermissionOnTheFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any folder")
	}
	dir := filepath.Join(t.TempDir(), "wx")
	if err := os.Mkdir(dir, 0o300); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	p := filepath.Join(dir, name)
	if err := atomicfile.Place(p, 0o600, -1, func(tmp string) error { return os.WriteFile(tmp, newData, 0o600) }); err != nil {
		t.Fatal(err)
	}
	want(t, p, newData, 0o600)
}
