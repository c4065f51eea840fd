// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/byokd/byokd/internal/testenv"
)

// format1Plugin is the last plugin that wrote block format 1 (AES-256-GCM
// with a 96-bit nonce): commit d9cadbe, before format 2. It served
// WiredTiger 3.2.1 only.
const format1Plugin = "d9cadbe"

// buildPluginAt builds the WiredTiger plugin of an earlier commit of this
// repository (git archive, so the work tree is untouched). A clone without
// that history fails the test: CI clones the whole repository.
func buildPluginAt(t *testing.T, rev string) string {
	t.Helper()
	root := testenv.ModuleRoot(t)
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s (the whole history is needed): %v\n%s", rev, err, out)
	}
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o755)
	lib := filepath.Join(dir, "libbyokd-wiredtiger-"+rev+".so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", lib, "./plugin/wiredtiger")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the plugin of %s: %v\n%s", rev, err, out)
	}
	return lib
}

// TestWiredTigerReadsFormat1Databases opens, with today's plugin, a
// database that the format 1 plugin wrote and left to recover (killed while
// writing, with the log on): every committed row reads back, log records
// included, whatever their size, and wt verify is clean. Then today's plugin
// writes on (format 2) and both formats read back side by side.
func TestWiredTigerReadsFormat1Databases(t *testing.T) {
	old := buildPluginAt(t, format1Plugin)
	w := newWT(t, "3.2", nil)
	const marker = "FORMAT1-ROW"
	logged := ",log=(enabled=true),transaction_sync=(enabled=true,method=none),checkpoint=(wait=1)"
	cfg := func(lib string, create bool) string {
		c := fmt.Sprintf(`cache_size=%s,extensions=[%s=(config="socket=%s,mode=release")],encryption=(name=byokd,keyid=system)`,
			w.cache, lib, w.b.Socket)
		if create {
			c = "create," + c
		}
		return c + logged
	}

	// The format 1 plugin writes, checkpoints now and then, and is killed.
	cmd := w.wt.Command(w.wt.Harness, w.db, cfg(old, true), "insert", "table:t", "rows", "1000000", marker)
	cmd.Env = append(cmd.Environ(), "HARNESS_PROGRESS=1")
	committed := killWhen(t, cmd, "committed ", 0, 20000)

	// Today's plugin recovers it from format 1 log records and reads it.
	if out, err := w.harness(t, nil, cfg(w.lib, false), "verify", "table:t", fmt.Sprintf("+%d", committed), marker); err != nil {
		t.Fatalf("today's plugin on a format 1 database (%d committed rows): %v\n%s", committed, err, out)
	}
	if out, err := w.wt.Command(w.wt.WT, "-h", w.db, "-C", cfg(w.lib, false), "verify", "table:t").CombinedOutput(); err != nil {
		t.Fatalf("wt verify of the format 1 database: %v\n%s", err, out)
	}

	// Today's plugin writes a second table beside it, and both read back.
	if out, err := w.harness(t, nil, cfg(w.lib, false), "insert", "table:t2", "rows", "5000", marker); err != nil {
		t.Fatalf("insert with today's plugin: %v\n%s", err, out)
	}
	for _, v := range [][]string{{"table:t", fmt.Sprintf("+%d", committed)}, {"table:t2", "5000"}} {
		if out, err := w.harness(t, nil, cfg(w.lib, false), "verify", v[0], v[1], marker); err != nil {
			t.Fatalf("verify %s after both formats: %v\n%s", v[0], err, out)
		}
	}
	noMarkerInFiles(t, w.db, marker)
}
