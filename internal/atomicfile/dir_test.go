// SPDX-License-Identifier: Apache-2.0

//go:build unix

package atomicfile_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/byokd/byokd/internal/atomicfile"
	"github.com/byokd/byokd/internal/atomicfile/atomicfiletest"
)

const name = "f"

var (
	oldData = []byte("old content, whole\n")
	newData = bytes.Repeat([]byte("new content "), 100)
)

// openDir opens a fresh folder as a Dir, with the old file in it at mode
// 0640 unless old is false.
func openDir(t *testing.T, old bool) atomicfile.Dir {
	t.Helper()
	dir := t.TempDir()
	if old {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, oldData, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return atomicfile.NewDir(f)
}

func pathOf(d atomicfile.Dir) string { return filepath.Join(d.File.Name(), name) }

// want fails unless the file holds data with mode.
func want(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s holds %q, want %q", path, got, data)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode {
		t.Fatalf("%s: mode %v, want a regular file of %v", path, fi.Mode(), mode)
	}
}

// noTemps fails if a temporary file is left in the folder.
func noTemps(t *testing.T, d atomicfile.Dir) {
	t.Helper()
	ents, err := os.ReadDir(d.File.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestFailuresCoverEveryStep(t *testing.T) {
	// A new step in Steps needs a row in atomicfiletest.Failures, or the
	// tests that inject them would not prove that its failure leaves the
	// old file.
	steps := map[string]bool{}
	for _, f := range atomicfiletest.Failures {
		steps[f.Step] = true
	}
	known := []string{"write", "fsync", "close", "rename", "link", "folder fsync"}
	for _, want := range known {
		if !steps[want] {
			t.Errorf("no failure injected at %s", want)
		}
	}
	if n := reflect.TypeFor[atomicfile.Steps]().NumField(); n != len(known) {
		t.Errorf("Steps has %d steps, the failures table knows %d", n, len(known))
	}
}

func TestFailedWriteStepLeavesTheOldFileWhole(t *testing.T) {
	for _, f := range atomicfiletest.Failures {
		if f.Step == "link" {
			continue // Write renames
		}
		t.Run(f.Step, func(t *testing.T) {
			d := openDir(t, true)
			f.Inject(&d.Steps, atomicfiletest.OnCall(1))
			if err := d.Write(name, newData, 0o600); !errors.Is(err, f.Want) {
				t.Fatalf("Write() = %v, want %v", err, f.Want)
			}
			if f.Step == "folder fsync" {
				// The rename was done: the new file is in place, whole,
				// and the failure is reported.
				want(t, pathOf(d), newData, 0o600)
			} else {
				want(t, pathOf(d), oldData, 0o640)
			}
			noTemps(t, d)
		})
	}
}

func TestFailedCreateStepLeavesNoFile(t *testing.T) {
	for _, f := range atomicfiletest.Failures {
		if f.Step == "rename" {
			continue // Create links
		}
		t.Run(f.Step, func(t *testing.T) {
			d := openDir(t, false)
			f.Inject(&d.Steps, atomicfiletest.OnCall(1))
			err := d.Create(name, newData, 0o600)
			if !errors.Is(err, f.Want) {
				t.Fatalf("Create() = %v, want %v", err, f.Want)
			}
			noTemps(t, d)
			if f.Step == "folder fsync" {
				want(t, pathOf(d), newData, 0o600)
				return
			}
			if _, err := os.Lstat(pathOf(d)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a failed Create left %s: %v", pathOf(d), err)
			}
			if err := d.Create(name, newData, 0o600); err != nil {
				t.Fatalf("Create after a failed one: %v", err)
			}
			want(t, pathOf(d), newData, 0o600)
		})
	}
}

// recordSteps makes d's steps log what they do, in order, and checks at
// each step what must hold then.
func recordSteps(t *testing.T, d *atomicfile.Dir, mode os.FileMode) *[]string {
	t.Helper()
	var log []string
	s := &d.Steps
	write, sync, closeF, rename, link, syncDir := s.Write, s.Sync, s.Close, s.Rename, s.Link, s.SyncDir
	s.Write = func(f *os.File, b []byte) (int, error) {
		log = append(log, "write")
		// The temporary file is in the folder itself (a rename within one
		// filesystem), and has its mode before any data is in it.
		if got := filepath.Dir(f.Name()); got != d.File.Name() {
			t.Errorf("temporary file in %s, want %s", got, d.File.Name())
		}
		if !strings.HasPrefix(filepath.Base(f.Name()), atomicfile.TempPrefix(name)) {
			t.Errorf("temporary file %s does not begin with %s", f.Name(), atomicfile.TempPrefix(name))
		}
		if fi, err := f.Stat(); err != nil || fi.Mode().Perm() != mode || fi.Size() != 0 {
			t.Errorf("temporary file before the write: %v, %v; want empty, mode %v", fi, err, mode)
		}
		return write(f, b)
	}
	s.Sync = func(f *os.File) error { log = append(log, "fsync"); return sync(f) }
	s.Close = func(f *os.File) error { log = append(log, "close"); return closeF(f) }
	s.Rename = func(dirfd int, from, to string) error {
		log = append(log, "rename to "+to)
		return rename(dirfd, from, to)
	}
	s.Link = func(dirfd int, from, to string) error {
		log = append(log, "link to "+to)
		return link(dirfd, from, to)
	}
	s.SyncDir = func(f *os.File) error {
		if f != d.File {
			t.Errorf("fsynced %s, not the folder", f.Name())
		}
		log = append(log, "folder fsync")
		return syncDir(f)
	}
	return &log
}

func TestWriteFsyncsTheFileThenRenamesThenFsyncsTheFolder(t *testing.T) {
	d := openDir(t, true)
	log := recordSteps(t, &d, 0o604)
	if err := d.Write(name, newData, 0o604); err != nil {
		t.Fatal(err)
	}
	if w := []string{"write", "fsync", "close", "rename to " + name, "folder fsync"}; !slices.Equal(*log, w) {
		t.Fatalf("steps %q, want %q", *log, w)
	}
	want(t, pathOf(d), newData, 0o604)
	noTemps(t, d)
}

func TestCreateFsyncsTheFileThenLinksThenFsyncsTheFolder(t *testing.T) {
	d := openDir(t, false)
	log := recordSteps(t, &d, 0o600)
	if err := d.Create(name, newData, 0o600); err != nil {
		t.Fatal(err)
	}
	if w := []string{"write", "fsync", "close", "link to " + name, "folder fsync"}; !slices.Equal(*log, w) {
		t.Fatalf("steps %q, want %q", *log, w)
	}
	want(t, pathOf(d), newData, 0o600)
	noTemps(t, d)
}

func TestWriteSetsExactlyTheModeWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	d := openDir(t, true)
	for _, mode := range []os.FileMode{0o644, 0o600, 0o400, 0o755} {
		if err := d.Write(name, newData, mode); err != nil {
			t.Fatal(err)
		}
		want(t, pathOf(d), newData, mode)
	}
	if err := atomicfile.Write(filepath.Join(d.File.Name(), "g"), newData, 0o644); err != nil {
		t.Fatal(err)
	}
	want(t, filepath.Join(d.File.Name(), "g"), newData, 0o644)
}

func TestCreateLeavesWhateverHasTheNameAlone(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	for what, plant := range map[string]func(path string) error{
		"a file":             func(p string) error { return os.WriteFile(p, oldData, 0o640) },
		"a symlink":          func(p string) error { return os.Symlink(victim, p) },
		"a dangling symlink": func(p string) error { return os.Symlink(victim+"-gone", p) },
		"a folder":           func(p string) error { return os.Mkdir(p, 0o700) },
	} {
		t.Run(what, func(t *testing.T) {
			d := openDir(t, false)
			if err := plant(pathOf(d)); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(pathOf(d))
			if err := d.Create(name, newData, 0o600); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Create() over %s = %v, want fs.ErrExist", what, err)
			}
			after, err := os.Lstat(pathOf(d))
			if err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
				t.Fatalf("Create changed %s: %v, %v", what, after, err)
			}
			noTemps(t, d)
		})
	}
	want(t, victim, oldData, 0o644)
}

func TestWriteReplacesASymlinkWithoutFollowingIt(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	d := openDir(t, false)
	if err := os.Symlink(victim, pathOf(d)); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(name, newData, 0o600); err != nil {
		t.Fatal(err)
	}
	want(t, pathOf(d), newData, 0o600)
	want(t, victim, oldData, 0o644)
}

func TestWritesGoToTheOpenFolderNotWhatIsNowAtItsPath(t *testing.T) {
	d := openDir(t, true)
	dir := d.File.Name()
	moved := dir + "-moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(name, newData, 0o600); err != nil {
		t.Fatal(err)
	}
	want(t, filepath.Join(moved, name), newData, 0o600)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the folder now at the path got %d entries", len(ents))
	}
}

func TestRemoveTempsRemovesOnlyTheTempsOfTheNames(t *testing.T) {
	d := openDir(t, true)
	dir := d.File.Name()
	stale := []string{atomicfile.TempPrefix(name) + "dead", atomicfile.TempPrefix("g") + "beef"}
	keep := []string{name, atomicfile.TempPrefix("h") + "0", "notes.tmp-1", "." + name + ".bak"}
	for _, n := range append(slices.Clone(stale), keep[1:]...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, atomicfile.TempPrefix(name)+"dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, atomicfile.TempPrefix(name)+"dir")
	d.RemoveTemps(name, "g")
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temporary file %s kept: %v", n, err)
		}
	}
	for _, n := range keep {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s, not a temporary file of the names, was removed: %v", n, err)
		}
	}
}

func TestWriteRefusesANameThatIsNotPlain(t *testing.T) {
	d := openDir(t, false)
	for _, n := range []string{"", ".", "..", "a/b", "../f"} {
		if err := d.Write(n, newData, 0o600); err == nil {
			t.Errorf("Write(%q) succeeded", n)
		}
		if err := d.Create(n, newData, 0o600); err == nil {
			t.Errorf("Create(%q) succeeded", n)
		}
	}
	if ents, _ := os.ReadDir(d.File.Name()); len(ents) != 0 {
		t.Fatalf("the folder holds %d entries", len(ents))
	}
}
