// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newStore(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rotated is the golden record re-wrapped under a new root key version.
func rotated(n int) *Record {
	r := goldenRecord()
	r.Ciphertext = fmt.Sprintf("rewrapped-%d", n)
	r.KeyVersion = fmt.Sprintf("version-%d", n)
	r.Updated = r.Updated.Add(time.Duration(n) * time.Hour)
	return r
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeKeyFile puts content at the store's path with exactly mode perm.
func writeKeyFile(t *testing.T, s *Store, content []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(s.Path(), content, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Path(), perm); err != nil {
		t.Fatal(err)
	}
}

func wantMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want a regular file with 0600", path, fi.Mode())
	}
}

// noTemps fails if any temp file is left in the state folder.
func noTemps(t *testing.T, s *Store) {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestCreateThenLoadRoundTripsTheRecord(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !sameRecord(got, goldenRecord()) {
		t.Fatalf("loaded %+v, want %+v", got, goldenRecord())
	}
	if b := readFile(t, s.Path()); !bytes.Equal(b, golden(t)) {
		t.Fatalf("file content:\n%s\nwant testdata/dek.json:\n%s", b, golden(t))
	}
	wantMode0600(t, s.Path())
	noTemps(t, s)
}

func TestLoadWithoutAFileIsErrNotExistNamingThePath(t *testing.T) {
	s := newStore(t)
	_, err := s.Load()
	if !errors.Is(err, ErrNotExist) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load() = %v, want ErrNotExist wrapping fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("error %q does not name %s", err, s.Path())
	}
}

func TestWithFileNameStoresUnderThatName(t *testing.T) {
	s := newStore(t, WithFileName("node-7.json"))
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	if s.Path() != filepath.Join(s.dir, "node-7.json") {
		t.Fatalf("Path() = %s", s.Path())
	}
	if _, err := os.Stat(filepath.Join(s.dir, FileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("wrote %s too: %v", FileName, err)
	}
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
}

func TestCreateNeverOverwritesAnExistingFile(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, s.Path())
	err := s.Create(rotated(1))
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("second Create() = %v, want ErrExists naming the file", err)
	}
	if after := readFile(t, s.Path()); !bytes.Equal(before, after) {
		t.Fatal("Create overwrote the wrapped key file")
	}
	noTemps(t, s)
}

func TestCreateNeverOverwritesACorruptFile(t *testing.T) {
	s := newStore(t)
	writeKeyFile(t, s, []byte("not json"), 0o600)
	if err := s.Create(goldenRecord()); !errors.Is(err, ErrExists) {
		t.Fatalf("Create() over a corrupt file = %v, want ErrExists", err)
	}
	if got := readFile(t, s.Path()); string(got) != "not json" {
		t.Fatal("Create replaced a corrupt file")
	}
}

func TestCreateRefusesAnInvalidRecord(t *testing.T) {
	s := newStore(t)
	r := goldenRecord()
	r.Ciphertext = ""
	if err := s.Create(r); err == nil {
		t.Fatal("Create accepted a record without ciphertext")
	}
	if _, err := s.Load(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("an invalid record left a file: %v", err)
	}
}

func TestReplaceKeepsThePreviousVersionAsPrev(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	v0 := readFile(t, s.Path())
	if err := s.Replace(rotated(1)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || !sameRecord(got, rotated(1)) {
		t.Fatalf("after Replace, Load() = %+v, %v; want %+v", got, err, rotated(1))
	}
	prev := s.Path() + PrevSuffix
	if b := readFile(t, prev); !bytes.Equal(b, v0) {
		t.Fatalf("%s:\n%s\nwant the previous file byte for byte:\n%s", prev, b, v0)
	}
	wantMode0600(t, s.Path())
	wantMode0600(t, prev)

	v1 := readFile(t, s.Path())
	if err := s.Replace(rotated(2)); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, prev); !bytes.Equal(b, v1) {
		t.Fatal("a second Replace did not keep the version it replaced")
	}
	noTemps(t, s)
}

func TestReplaceWithoutAFileIsErrNotExist(t *testing.T) {
	s := newStore(t)
	if err := s.Replace(rotated(1)); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Replace() = %v, want ErrNotExist", err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Replace created a file: %v", err)
	}
}

func TestReplaceNeverOverwritesACorruptFile(t *testing.T) {
	s := newStore(t)
	writeKeyFile(t, s, []byte(`{"schema":1`), 0o600)
	if err := s.Replace(rotated(1)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Replace() = %v, want ErrCorrupt", err)
	}
	if got := readFile(t, s.Path()); string(got) != `{"schema":1` {
		t.Fatal("Replace overwrote a corrupt file")
	}
	if _, err := os.Lstat(s.Path() + PrevSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Replace wrote a .prev: %v", err)
	}
}

func TestReplaceRefusesARecordOfAnotherIdentity(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, s.Path())
	other := rotated(1)
	other.ClusterID = "billing-prod"
	err := s.Replace(other)
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), `"orders-prod"`) || !strings.Contains(err.Error(), `"billing-prod"`) {
		t.Fatalf("Replace() = %v, want ErrForeign naming both clusters", err)
	}
	if !bytes.Equal(readFile(t, s.Path()), before) {
		t.Fatal("Replace overwrote a file of another identity")
	}
}

func TestCheckRefusesARecordOfAnotherRootKeyInstanceOrCluster(t *testing.T) {
	s := newStore(t)
	rec := goldenRecord()
	mine := rec.Identity()
	if err := s.Check(rec, mine); err != nil {
		t.Fatalf("Check of a matching record: %v", err)
	}
	for name, mutate := range map[string]func(*Identity){
		"root key": func(id *Identity) { id.RootKeyID = "0e0e0e0e-0000-4000-8000-000000000000" },
		"instance": func(id *Identity) { id.InstanceID = "ffffffff-0000-4000-8000-000000000000" },
		"cluster":  func(id *Identity) { id.ClusterID = "billing-prod" },
	} {
		t.Run(name, func(t *testing.T) {
			want := mine
			mutate(&want)
			err := s.Check(rec, want)
			if !errors.Is(err, ErrForeign) {
				t.Fatalf("Check() = %v, want ErrForeign", err)
			}
			for _, s := range []string{mine.RootKeyID, mine.InstanceID, mine.ClusterID, want.RootKeyID, want.InstanceID, want.ClusterID, s.Path()} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
			if strings.Contains(err.Error(), goldenCiphertext) {
				t.Error("the error carries the ciphertext")
			}
		})
	}
}

// plantSymlink points the store's key file at a valid 0600 wrapped key file
// in another folder and returns that file's path.
func plantSymlink(t *testing.T, s *Store, at string) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "elsewhere.json")
	if err := os.WriteFile(target, golden(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, at); err != nil {
		t.Fatal(err)
	}
	return target
}

func TestSymlinkAtTheKeyFileIsRefusedAndNeverFollowed(t *testing.T) {
	s := newStore(t)
	target := plantSymlink(t, s, s.Path())
	if _, err := s.Load(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("Load() through a symlink = %v, want ErrUnsafe naming the file", err)
	}
	if err := s.Create(rotated(1)); !errors.Is(err, ErrExists) {
		t.Fatalf("Create() over a symlink = %v, want ErrExists", err)
	}
	if err := s.Replace(rotated(1)); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("Replace() over a symlink = %v, want ErrUnsafe", err)
	}
	if b := readFile(t, target); !bytes.Equal(b, golden(t)) {
		t.Fatal("a write went through the symlink to its target")
	}
	if dest, err := os.Readlink(s.Path()); err != nil || dest != target {
		t.Fatalf("the symlink was replaced: %q, %v", dest, err)
	}
	noTemps(t, s)
}

func TestDanglingSymlinkAtTheKeyFileIsUnsafeNotMissing(t *testing.T) {
	s := newStore(t)
	if err := os.Symlink(filepath.Join(t.TempDir(), "nothing"), s.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrUnsafe) || errors.Is(err, ErrNotExist) {
		t.Fatalf("Load() = %v, want ErrUnsafe (a missing file would let byokd provision)", err)
	}
	if err := s.Create(goldenRecord()); !errors.Is(err, ErrExists) {
		t.Fatalf("Create() = %v, want ErrExists", err)
	}
}

func TestSymlinkAtPrevIsReplacedNotFollowed(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	prev := s.Path() + PrevSuffix
	target := plantSymlink(t, s, prev)
	if err := os.WriteFile(target, []byte("someone else's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Replace(rotated(1)); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, target); string(b) != "someone else's file" {
		t.Fatal("Replace wrote through the symlink at .prev")
	}
	wantMode0600(t, prev)
	if !bytes.Equal(readFile(t, prev), golden(t)) {
		t.Fatal(".prev does not hold the previous version")
	}
}

func TestSymlinkAtTheLockFileFailsWritesWithoutFollowing(t *testing.T) {
	s := newStore(t)
	target := filepath.Join(t.TempDir(), "lock-target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(s.dir, lockName)); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(goldenRecord()); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("Create() = %v, want ErrUnsafe", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Create wrote without the lock: %v", err)
	}
}

func TestNonRegularKeyFileIsRefused(t *testing.T) {
	for name, plant := range map[string]func(t *testing.T, path string){
		"fifo": func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"directory": func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"socket": func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Skipf("unix socket at %s: %v", path, err)
			}
			t.Cleanup(func() { l.Close() })
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			plant(t, s.Path())
			done := make(chan error, 1)
			go func() { _, err := s.Load(); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), name) {
					t.Fatalf("Load() = %v, want ErrUnsafe naming a %s", err, name)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Load blocked on the file")
			}
			if err := s.Create(goldenRecord()); !errors.Is(err, ErrExists) {
				t.Fatalf("Create() = %v, want ErrExists", err)
			}
			if err := s.Replace(goldenRecord()); !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Replace() = %v, want ErrUnsafe", err)
			}
		})
	}
}

func TestKeyFileOpenToGroupOrOthersIsRefusedWithItsMode(t *testing.T) {
	for _, perm := range []os.FileMode{0o640, 0o644, 0o604, 0o660, 0o666, 0o602, 0o620} {
		t.Run(fmt.Sprintf("%04o", perm), func(t *testing.T) {
			s := newStore(t)
			writeKeyFile(t, s, golden(t), perm)
			_, err := s.Load()
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), fmt.Sprintf("%04o", perm)) {
				t.Fatalf("Load() = %v, want ErrUnsafe with mode %04o", err, perm)
			}
		})
	}
	t.Run("0400 is owner only and loads", func(t *testing.T) {
		s := newStore(t)
		writeKeyFile(t, s, golden(t), 0o400)
		if _, err := s.Load(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeyFileOwnedByAnotherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	s := newStore(t)
	writeKeyFile(t, s, golden(t), 0o600)
	if err := os.Lchown(s.Path(), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "4242") {
		t.Fatalf("Load() = %v, want ErrUnsafe naming uid 4242", err)
	}
}

func TestCorruptKeyFilesAreErrCorruptNamingTheFile(t *testing.T) {
	g := string(golden(t))
	cases := map[string]string{
		"empty":                "",
		"only whitespace":      " \n\t",
		"not json":             "dek",
		"array":                "[]",
		"null":                 "null",
		"string":               `"` + goldenCiphertext + `"`,
		"schema 2":             strings.Replace(g, `"schema": 1`, `"schema": 2`, 1),
		"schema 0":             strings.Replace(g, `"schema": 1`, `"schema": 0`, 1),
		"schema as string":     strings.Replace(g, `"schema": 1`, `"schema": "1"`, 1),
		"schema 1.5":           strings.Replace(g, `"schema": 1`, `"schema": 1.5`, 1),
		"empty ciphertext":     strings.Replace(g, goldenCiphertext, "", 1),
		"ciphertext null":      strings.Replace(g, `"`+goldenCiphertext+`"`, "null", 1),
		"empty aad":            strings.Replace(g, "[\n    \"byokd\",\n    \"cluster:orders-prod\"\n  ]", "[]", 1),
		"aad of numbers":       strings.Replace(g, "[\n    \"byokd\",\n    \"cluster:orders-prod\"\n  ]", "[1, 2]", 1),
		"bad created":          strings.Replace(g, `"created": "2026-11-28T10:00:00Z"`, `"created": "yesterday"`, 1),
		"zero updated":         strings.Replace(g, `"updated": "2026-11-28T10:00:00Z"`, `"updated": "0001-01-01T00:00:00Z"`, 1),
		"unknown key":          strings.Replace(g, `"schema": 1,`, `"schema": 1, "plaintext": "x",`, 1),
		"duplicate key":        strings.Replace(g, `"cluster_id": "orders-prod",`, `"cluster_id": "orders-prod", "cluster_id": "billing-prod",`, 1),
		"key in capitals":      strings.Replace(g, `"ciphertext"`, `"Ciphertext"`, 1),
		"two objects":          g + g,
		"trailing garbage":     g + "x",
		"too large":            strings.Replace(g, goldenCiphertext, strings.Repeat("A", maxSize), 1),
		"ciphertext as key":    `{"` + goldenCiphertext + `": 1}`,
		"ciphertext as time":   strings.Replace(g, `"2026-11-28T10:00:00Z"`, `"`+goldenCiphertext+`"`, 1),
		"ciphertext as schema": strings.Replace(g, `"schema": 1`, `"schema": "`+goldenCiphertext+`"`, 1),
	}
	for _, key := range fieldNames {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(golden(t), &m); err != nil {
			t.Fatal(err)
		}
		delete(m, key)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		cases["no "+key] = string(b)
	}
	s := newStore(t)
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			writeKeyFile(t, s, []byte(content), 0o600)
			_, err := s.Load()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("Load() = %v, want ErrCorrupt naming the file", err)
			}
			if strings.Contains(err.Error(), goldenCiphertext) {
				t.Fatalf("the error carries the ciphertext: %v", err)
			}
			if got := readFile(t, s.Path()); string(got) != content {
				t.Fatal("Load changed the file")
			}
		})
	}
}

func TestEveryTruncationOfAValidFileIsErrCorrupt(t *testing.T) {
	s := newStore(t)
	g := golden(t)
	valid := len(bytes.TrimRight(g, "\n"))
	for n := range valid {
		writeKeyFile(t, s, g[:n], 0o600)
		if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("the first %d of %d bytes: Load() = %v, want ErrCorrupt", n, len(g), err)
		}
	}
}

func TestOpenRefusesAnUnsafeStateFolderNamingIt(t *testing.T) {
	for name, c := range map[string]struct {
		make func(t *testing.T) string
		want error
	}{
		"missing": {func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }, fs.ErrNotExist},
		"regular file": {func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, ErrUnsafe},
		"symlink to a folder": {func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(t.TempDir(), p); err != nil {
				t.Fatal(err)
			}
			return p
		}, ErrUnsafe},
		"group writable":        {modeDir(0o770), ErrUnsafe},
		"world writable":        {modeDir(0o777), ErrUnsafe},
		"sticky world writable": {modeDir(0o1777), ErrUnsafe},
		"other owner": {func(t *testing.T) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			d := t.TempDir()
			if err := os.Chown(d, 4242, 4242); err != nil {
				t.Fatal(err)
			}
			return d
		}, ErrUnsafe},
	} {
		t.Run(name, func(t *testing.T) {
			dir := c.make(t)
			s, err := Open(dir)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", dir)
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("Open() = %v, want %v naming %s", err, c.want, dir)
			}
		})
	}
}

func modeDir(perm os.FileMode) func(t *testing.T) string {
	return func(t *testing.T) string {
		d := t.TempDir()
		if err := os.Chmod(d, perm); err != nil {
			t.Fatal(err)
		}
		return d
	}
}

func TestOpenAcceptsAFolderOthersCanOnlyRead(t *testing.T) {
	s, err := Open(modeDir(0o755)(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestOpenRefusesAFileNameWithAFolder(t *testing.T) {
	for _, name := range []string{"", ".", "..", "../dek.json", "sub/dek.json"} {
		if s, err := Open(t.TempDir(), WithFileName(name)); err == nil {
			s.Close()
			t.Errorf("Open with file name %q succeeded", name)
		}
	}
}

// The Store keeps the folder it checked: a folder swapped in under the
// same path later is not written.
func TestStoreKeepsWritingToTheFolderOpenChecked(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := os.Rename(dir, filepath.Join(parent, "checked")); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, FileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create wrote through the swapped-in symlink: %v", err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(parent, "checked", FileName)), golden(t)) {
		t.Fatal("Create did not write to the folder Open checked")
	}
}
