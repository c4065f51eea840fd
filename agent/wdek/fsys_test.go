// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/byokd/byokd/internal/atomicfile"
	"github.com/byokd/byokd/internal/atomicfile/atomicfiletest"
)

// TestFailedReplaceStepLeavesThePreviousFileByteIdentical makes each step
// of each of Replace's two atomic writes (first dek.json.prev, then
// dek.json) fail once.
func TestFailedReplaceStepLeavesThePreviousFileByteIdentical(t *testing.T) {
	for _, f := range atomicfiletest.Failures {
		if f.Step == "link" {
			continue // Replace renames
		}
		for call, target := range map[int]string{1: FileName + PrevSuffix, 2: FileName} {
			t.Run(f.Step+" of "+target, func(t *testing.T) {
				s := newStore(t)
				if err := s.Create(goldenRecord()); err != nil {
					t.Fatal(err)
				}
				if err := s.Replace(rotated(1)); err != nil {
					t.Fatal(err)
				}
				cur, prev := readFile(t, s.Path()), readFile(t, s.Path()+PrevSuffix)
				f.Inject(&s.fs, atomicfiletest.OnCall(call))

				err := s.Replace(rotated(2))
				if !errors.Is(err, f.Want) {
					t.Fatalf("Replace() = %v, want %v", err, f.Want)
				}
				gotCur, gotPrev := readFile(t, s.Path()), readFile(t, s.Path()+PrevSuffix)
				switch {
				case f.Step == "folder fsync" && call == 2:
					// dek.json was already renamed into place: the old
					// version survives byte for byte as .prev.
					if !bytes.Equal(gotPrev, cur) {
						t.Fatal(".prev does not hold the replaced file byte for byte")
					}
					if got, err := s.Load(); err != nil || !sameRecord(got, rotated(2)) {
						t.Fatalf("Load() = %+v, %v; want the new record", got, err)
					}
				case call == 2:
					if !bytes.Equal(gotCur, cur) {
						t.Fatalf("dek.json changed:\n%s\nwant:\n%s", gotCur, cur)
					}
					if !bytes.Equal(gotPrev, cur) {
						t.Fatal(".prev does not hold the current version")
					}
				default:
					if !bytes.Equal(gotCur, cur) {
						t.Fatalf("dek.json changed:\n%s\nwant:\n%s", gotCur, cur)
					}
					if f.Step != "folder fsync" && !bytes.Equal(gotPrev, prev) {
						t.Fatal("a failed write of .prev changed .prev")
					}
				}
				wantMode0600(t, s.Path())
				noTemps(t, s)
				if _, err := s.Load(); err != nil {
					t.Fatalf("after the failure, Load() = %v", err)
				}
			})
		}
	}
}

func TestFailedCreateStepLeavesNoFile(t *testing.T) {
	for _, f := range atomicfiletest.Failures {
		if f.Step == "rename" || f.Step == "folder fsync" {
			continue // Create links; the folder fsync comes after the link
		}
		t.Run(f.Step, func(t *testing.T) {
			s := newStore(t)
			f.Inject(&s.fs, atomicfiletest.OnCall(1))
			if err := s.Create(goldenRecord()); !errors.Is(err, f.Want) {
				t.Fatalf("Create() = %v, want %v", err, f.Want)
			}
			if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a failed Create left %s: %v", s.Path(), err)
			}
			noTemps(t, s)
			if err := s.Create(goldenRecord()); err != nil {
				t.Fatalf("Create after a failed one: %v", err)
			}
		})
	}
}

func TestCreateFolderFsyncFailureIsReportedAndTheFileIsWhole(t *testing.T) {
	s := newStore(t)
	s.fs.SyncDir = func(*os.File) error { return atomicfiletest.ErrInjected }
	if err := s.Create(goldenRecord()); !errors.Is(err, atomicfiletest.ErrInjected) {
		t.Fatalf("Create() = %v, want the fsync error", err)
	}
	if !bytes.Equal(readFile(t, s.Path()), golden(t)) {
		t.Fatal("the linked file is not whole")
	}
	noTemps(t, s)
}

func TestWritesRemoveTempFilesACrashLeft(t *testing.T) {
	s := newStore(t)
	stale := []string{atomicfile.TempPrefix(FileName) + "dead", atomicfile.TempPrefix(FileName+PrevSuffix) + "beef"}
	for _, n := range stale {
		if err := os.WriteFile(filepath.Join(s.dir, n), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	unrelated := filepath.Join(s.dir, "notes.tmp-1")
	if err := os.WriteFile(unrelated, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(s.dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp file %s kept: %v", n, err)
		}
	}
	if _, err := os.Lstat(unrelated); err != nil {
		t.Errorf("a file that is not ours was removed: %v", err)
	}
}

func TestConcurrentReplacesLeaveAValidFileAndPrev(t *testing.T) {
	s := newStore(t)
	if err := s.Create(goldenRecord()); err != nil {
		t.Fatal(err)
	}
	// A second Store on the same folder stands for a second process: only
	// the flock keeps the two apart.
	other, err := Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const n = 24
	written := map[string]bool{goldenCiphertext: true}
	for i := range n {
		written[rotated(i).Ciphertext] = true
	}
	var wg sync.WaitGroup
	for i := range n {
		st := s
		if i%2 == 1 {
			st = other
		}
		wg.Go(func() {
			if err := st.Replace(rotated(i)); err != nil {
				t.Errorf("Replace(%d): %v", i, err)
			}
			if _, err := st.Load(); err != nil {
				t.Errorf("Load during replaces: %v", err)
			}
		})
	}
	wg.Wait()
	cur, err := s.Load()
	if err != nil || !written[cur.Ciphertext] {
		t.Fatalf("after concurrent replaces, Load() = %+v, %v", cur, err)
	}
	prev, _, err := s.load(FileName + PrevSuffix)
	if err != nil || !written[prev.Ciphertext] || prev.Ciphertext == cur.Ciphertext {
		t.Fatalf("after concurrent replaces, .prev = %+v, %v", prev, err)
	}
	noTemps(t, s)
}

func TestConcurrentCreatesLetExactlyOneWin(t *testing.T) {
	dir := t.TempDir()
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wg.Go(func() { errs[i] = s.Create(rotated(i)) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("Create %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrExists):
			t.Fatalf("Create %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Create succeeded")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Load(); err != nil || got.Ciphertext != rotated(winner).Ciphertext {
		t.Fatalf("Load() = %+v, %v; want the winner's record", got, err)
	}
}

// holdLock takes the writers' flock from another open file description,
// as another byokd process would.
func holdLock(t *testing.T, dir string) (release func()) {
	t.Helper()
	fd, err := unix.Open(filepath.Join(dir, lockName), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { unix.Close(fd) }) }
	t.Cleanup(release)
	return release
}

func TestWriteGivesUpWithErrBusyWhileAnotherWriterHoldsTheLock(t *testing.T) {
	s := newStore(t, WithLockTimeout(100*time.Millisecond))
	holdLock(t, s.dir)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Create(goldenRecord()) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Create waited far past its lock timeout")
	}
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Create() = %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("gave up after %v, before the lock timeout", waited)
	}
	if _, err := s.Load(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Create wrote without the lock: %v", err)
	}
}

func TestWriteWaitsForTheLockHolderThenWrites(t *testing.T) {
	s := newStore(t, WithLockTimeout(10*time.Second))
	release := holdLock(t, s.dir)
	done := make(chan error, 1)
	go func() { done <- s.Create(goldenRecord()) }()
	select {
	case err := <-done:
		t.Fatalf("Create did not wait for the lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := s.Load(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Create wrote while another writer held the lock: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Create after the lock was released: %v", err)
	}
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
}
