// SPDX-License-Identifier: Apache-2.0

package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestSetupReplacesItsFilesRatherThanWritingIntoThem plants each file Setup
// writes as a hard link to a file outside the dev folder. A write into the
// file in place would change that file too, and a crash in the middle of
// it would leave a torn file: kpemu.env losing the root key's id makes the
// next start create another root key, which the stored wrapped key does not
// belong to. Setup replaces each file whole, so the outside file is left
// as it was.
func TestSetupReplacesItsFilesRatherThanWritingIntoThem(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	for _, name := range []string{"byokd.toml", "kpemu.env", "apikey"} {
		o := filepath.Join(outside, name)
		if err := os.WriteFile(o, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(o, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Setup(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"byokd.toml", "kpemu.env", "apikey"} {
		if b, err := os.ReadFile(filepath.Join(outside, name)); err != nil || len(b) != 0 {
			t.Errorf("Setup wrote into %s in place: the file linked to it holds %d bytes (%v)", name, len(b), err)
		}
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after Setup: %v, %v; want a written file of mode 0600", name, fi, err)
		}
	}
	if d.Env.RootKeyID == "" || d.Config == nil {
		t.Fatalf("Setup returned %+v", d)
	}
}
