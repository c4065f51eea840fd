package wdek

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func record(ct string) *Record {
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	return &Record{Schema: Schema, RootKeyID: "rk", InstanceID: "inst", ClusterID: "c1", Ciphertext: ct,
		KeyVersion: "v1", AAD: []string{"byokd", "cluster:c1"}, Created: now, Updated: now}
}

func newStore(t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateLoadRoundTripWith0600(t *testing.T) {
	s := newStore(t)
	if _, err := s.Load(); !errors.Is(err, ErrNotExist) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty store: %v", err)
	}
	if err := s.Create(record("ct-1")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got.Ciphertext != "ct-1" || got.Fingerprint() == "" || len(got.Fingerprint()) != 12 {
		t.Fatalf("load: %+v %v", got, err)
	}
	fi, _ := os.Stat(s.Path())
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestCreateNeverOverwrites(t *testing.T) {
	s := newStore(t)
	if err := s.Create(record("first")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(record("second")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if got, _ := s.Load(); got.Ciphertext != "first" {
		t.Fatal("Create overwrote the file")
	}
	leftovers(t, s)
}

func TestReplaceKeepsPrevious(t *testing.T) {
	s := newStore(t)
	if err := s.Create(record("v1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Replace(record("v2")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Load()
	prev, err := load(s.Path() + ".prev")
	if err != nil || got.Ciphertext != "v2" || prev.Ciphertext != "v1" {
		t.Fatalf("after replace: %v %v %v", got, prev, err)
	}
	if err := (&Store{dir: s.dir, path: filepath.Join(t.TempDir(), FileName), fs: realFS}).Replace(record("x")); !errors.Is(err, ErrNotExist) {
		t.Fatalf("replace with nothing to replace: %v", err)
	}
	leftovers(t, s)
}

func TestSymlinkAtKeyPathIsRefusedAndNotFollowed(t *testing.T) {
	s := newStore(t)
	target := filepath.Join(t.TempDir(), "target.json")
	good, _ := os.ReadFile(writeValid(t))
	if err := os.WriteFile(target, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, s.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("load through symlink: %v", err)
	}
	if err := s.Create(record("new")); err == nil {
		t.Fatal("create over a symlink succeeded")
	}
	if err := s.Replace(record("new")); err == nil {
		t.Fatal("replace over a symlink succeeded")
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(after, good) {
		t.Fatal("the symlink's target was written")
	}
}

func writeValid(t *testing.T) string {
	s := newStore(t)
	if err := s.Create(record("valid")); err != nil {
		t.Fatal(err)
	}
	return s.Path()
}

func TestUnsafeFilesAreRefused(t *testing.T) {
	t.Run("fifo", func(t *testing.T) {
		s := newStore(t)
		if err := syscall.Mkfifo(s.Path(), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("fifo: %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		s := newStore(t)
		if err := os.Mkdir(s.Path(), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("directory: %v", err)
		}
	})
	t.Run("mode 0644", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(record("x")); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(s.Path(), 0o644)
		if _, err := s.Load(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("0644: %v", err)
		}
	})
	t.Run("world-writable state folder", func(t *testing.T) {
		dir := t.TempDir()
		_ = os.Chmod(dir, 0o777)
		if _, err := Open(dir); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("open: %v", err)
		}
	})
	t.Run("symlinked state folder", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link")
		_ = os.Symlink(t.TempDir(), link)
		if _, err := Open(link); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("open: %v", err)
		}
	})
}

func TestCorruptFilesAreErrCorrupt(t *testing.T) {
	valid, _ := os.ReadFile(writeValid(t))
	for name, content := range map[string]string{
		"empty":          "",
		"truncated":      string(valid[:len(valid)/2]),
		"not json":       "hello",
		"unknown schema": strings.Replace(string(valid), `"schema": 1`, `"schema": 2`, 1),
		"no ciphertext":  strings.Replace(string(valid), `"ciphertext": "valid"`, `"ciphertext": ""`, 1),
		"unknown field":  strings.Replace(string(valid), `"schema": 1`, `"schema": 1, "extra": true`, 1),
		"two objects":    string(valid) + string(valid),
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(s.Path(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("want ErrCorrupt naming the file, got %v", err)
			}
		})
	}
}

// TestEveryFailedWriteStepLeavesTheOldFile makes each step of the atomic
// write fail and checks the previous file is intact, byte for byte.
func TestEveryFailedWriteStepLeavesTheOldFile(t *testing.T) {
	boom := errors.New("injected failure")
	steps := map[string]func(*fsys){
		"write": func(f *fsys) { f.write = func(*os.File, []byte) (int, error) { return 0, boom } },
		"short write": func(f *fsys) {
			f.write = func(file *os.File, b []byte) (int, error) { n, _ := file.Write(b[:len(b)/2]); return n, boom }
		},
		"fsync":  func(f *fsys) { f.sync = func(*os.File) error { return boom } },
		"rename": func(f *fsys) { f.rename = func(string, string) error { return boom } },
	}
	for name, inject := range steps {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Create(record("old")); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(s.Path())
			inject(&s.fs)
			if err := s.Replace(record("new")); !errors.Is(err, boom) {
				t.Fatalf("replace: %v", err)
			}
			after, _ := os.ReadFile(s.Path())
			if !bytes.Equal(before, after) {
				t.Fatal("the old file changed")
			}
			leftovers(t, s)
		})
	}
	t.Run("dir fsync after rename", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(record("old")); err != nil {
			t.Fatal(err)
		}
		s.fs.syncDir = func(string) error { return boom }
		if err := s.Replace(record("new")); !errors.Is(err, boom) {
			t.Fatalf("replace: %v", err)
		}
		// The rename happened; either version is a whole, valid file.
		if _, err := s.Load(); err != nil {
			t.Fatalf("after a failed dir fsync: %v", err)
		}
		leftovers(t, s)
	})
	t.Run("create fails", func(t *testing.T) {
		s := newStore(t)
		s.fs.write = func(*os.File, []byte) (int, error) { return 0, boom }
		if err := s.Create(record("x")); !errors.Is(err, boom) {
			t.Fatalf("create: %v", err)
		}
		if _, err := s.Load(); !errors.Is(err, ErrNotExist) {
			t.Fatalf("a failed create left a file: %v", err)
		}
		leftovers(t, s)
	})
}

func TestConcurrentReplacesLeaveAValidFile(t *testing.T) {
	s := newStore(t)
	if err := s.Create(record("v0")); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.dir) // a second store on the same folder, as a second process would have
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = s2
			}
			if err := st.Replace(record("v" + string(rune('a'+i)))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	leftovers(t, s)
}

func leftovers(t *testing.T, s *Store) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(s.dir, "*.tmp-*"))
	if len(m) > 0 {
		t.Fatalf("temp files left: %v", m)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"schema":1,"root_key_id":"rk","instance_id":"i","cluster_id":"c","ciphertext":"x","key_version":"v","aad":["a"],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parse("dek.json", b)
		if err == nil && r.Validate() != nil {
			t.Fatal("parse accepted an invalid record")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("parse error not ErrCorrupt: %v", err)
		}
	})
}
