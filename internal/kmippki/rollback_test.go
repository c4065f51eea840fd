// SPDX-License-Identifier: Apache-2.0

package kmippki

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/atomicfile"
	"github.com/byokd/byokd/internal/atomicfile/atomicfiletest"
)

// TestAFailedWriteRemovesWhatWasWritten: whichever step of whichever
// file's write fails, Init and AddClient return its error and leave none
// of their files behind, nor a temporary file.
func TestAFailedWriteRemovesWhatWasWritten(t *testing.T) {
	t.Cleanup(func() { testSteps = nil })
	now := func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }
	caDir := t.TempDir()
	if _, err := Init(Options{Dir: caDir, Hosts: []string{"localhost"}, Now: now}); err != nil {
		t.Fatal(err)
	}
	const initFiles, clientFiles = 7, 3
	for _, f := range atomicfiletest.Failures {
		if f.Step == "rename" {
			continue // Create links the file in place, it does not rename
		}
		for n := range initFiles {
			calls := 0
			testSteps = func(s *atomicfile.Steps) {
				f.Inject(s, func() bool { calls++; return calls == n+1 })
			}
			dir := t.TempDir()
			_, err := Init(Options{Dir: dir, Hosts: []string{"localhost"}, Clients: []string{"mongod"}, Now: now})
			if calls <= n {
				t.Fatalf("Init: the step %s ran %d times, not for each of the %d files", f.Step, calls, initFiles)
			}
			if !errors.Is(err, f.Want) {
				t.Errorf("Init, %s of file %d failing: %v, want %v", f.Step, n+1, err, f.Want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("Init, %s of file %d failing, left %d files (%s...)", f.Step, n+1, len(ents), ents[0].Name())
			}
		}
		for n := range clientFiles {
			calls := 0
			testSteps = func(s *atomicfile.Steps) {
				f.Inject(s, func() bool { calls++; return calls == n+1 })
			}
			_, err := AddClient(caDir, "mongod", now)
			if calls <= n {
				t.Fatalf("AddClient: the step %s ran %d times, not for each of the %d files", f.Step, calls, clientFiles)
			}
			if !errors.Is(err, f.Want) {
				t.Errorf("AddClient, %s of file %d failing: %v, want %v", f.Step, n+1, err, f.Want)
			}
			if m, _ := filepath.Glob(filepath.Join(caDir, "*client-mongod*")); len(m) != 0 {
				t.Errorf("AddClient, %s of file %d failing, left %v", f.Step, n+1, m)
			}
		}
	}
	testSteps = nil
	if _, err := AddClient(caDir, "mongod", now); err != nil {
		t.Fatalf("AddClient after the failures: %v", err)
	}
}
