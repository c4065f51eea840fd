// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/byokd/byokd/internal/testenv"
)

// formatRuns is how many test/format runs of each kind TestWiredTigerFormat
// does: 1 in CI, more with FORMAT_RUNS (make stress-wiredtiger).
func formatRuns() int {
	if n, err := strconv.Atoi(os.Getenv("FORMAT_RUNS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// formatPattern is what test/format writes into every value
// (test/format/kv.c): found in a data file, it is data in the clear.
const formatPattern = "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ"

// TestWiredTigerFormat runs WiredTiger's own stress tester, test/format
// from the WiredTiger 11.3 tree (mongod 8.0's), with every table, the
// metadata and the log encrypted by byokd: its random configurations
// (row, column and variable-length stores, checkpoints, salvage, verify,
// backups, transactions, eviction under a small cache) must all succeed,
// and so must its abort/recovery mode (format.abort: the process drops dead
// during the timed run, then format -R recovers and verifies). No data file
// may hold format's value pattern; a control run without encryption shows
// that the search finds it.
func TestWiredTigerFormat(t *testing.T) {
	wt := testenv.WiredTigerLine(t, "11.3")
	w := newWT(t, "11.3", nil)
	ext := fmt.Sprintf(`extensions=[%s=(config="socket=%s,mode=release")],encryption=(name=byokd,keyid=system)`, w.lib, w.b.Socket)
	// Pinned: what the byokd extension list replaces (format's own
	// compressor, collator and storage source extensions; snappy is built
	// in), and what format cannot do with a second encryptor (import into a
	// new database).
	pinned := []string{"btree.compression=off", "logging.compression=off", "btree.reverse=0", "import=0",
		"tiered_storage.storage_source=off", "chunk_cache=0", "runs.in_memory=0", "runs.tables=2"}
	format := func(t *testing.T, home string, extra ...string) string {
		t.Helper()
		conf := filepath.Join(t.TempDir(), "CONFIG")
		// FORMAT_EXTRA adds settings (';'-separated), e.g. a failed run's
		// random.data_seed and random.extra_seed to run it again.
		if more := os.Getenv("FORMAT_EXTRA"); more != "" {
			extra = append(extra, strings.Split(more, ";")...)
		}
		if err := os.WriteFile(conf, []byte(strings.Join(append(pinned, extra...), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := wt.Command(wt.Format, "-c", conf, "-h", home)
		cmd.Dir = filepath.Dir(home)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	failed := func(t *testing.T, home, out string) {
		t.Helper()
		cfg, _ := os.ReadFile(filepath.Join(home, "CONFIG"))
		// format prints its whole CONFIG when it fails: the error is
		// before it, among lines that are not settings.
		var errs []string
		for _, l := range strings.Split(out, "\n") {
			if k, _, ok := strings.Cut(l, "="); (!ok || strings.ContainsAny(k, " :")) && strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "#") {
				errs = append(errs, l)
			}
		}
		t.Fatalf("test/format failed\n--- its messages ---\n%s\n--- output (tail) ---\n%s\n--- its CONFIG ---\n%s",
			tail(strings.Join(errs, "\n"), 6000), tail(out, 2000), cfg)
	}

	t.Run("control without encryption", func(t *testing.T) {
		home := filepath.Join(t.TempDir(), "RUNDIR")
		// Row-store values long enough to hold the pattern: a random
		// configuration of short values or fixed-length column stores
		// would hold none, and the control proved nothing (a CI run).
		out := format(t, home, "disk.encryption=off", "wiredtiger.config=extensions=[]", "runs.timer=1", "runs.ops=5000", "runs.rows=5000", "logging=1",
			"runs.type=row-store", "btree.value_min=128", "btree.value_max=512")
		if !strings.Contains(out, "successful run completed") {
			failed(t, home, out)
		}
		if len(formatDataFiles(t, home)) == 0 {
			t.Fatalf("no data file holds format's values without encryption: the search proves nothing")
		}
	})
	// A run that failed in CI: format corrupts a table's file and salvages
	// it (ops.salvage), with checksums only on unencrypted blocks, so the
	// corrupt encrypted blocks reach the decryptor; salvage stopped on the
	// plugin's EIO ("Input/output error") where it skips a block on
	// WT_ERROR. Its seeds make it the same run every time.
	t.Run("salvage of a corrupted file", func(t *testing.T) {
		home := filepath.Join(t.TempDir(), "RUNDIR")
		out := format(t, home, "disk.encryption=byokd", "wiredtiger.config="+ext, "runs.timer=1", "runs.ops=200000", "runs.rows=50000",
			"random.data_seed=5184566", "random.extra_seed=5053869")
		if !strings.Contains(out, "successful run completed") {
			failed(t, home, out)
		}
		if c, err := os.ReadFile(filepath.Join(home, "SALVAGE.corrupt")); err != nil || !strings.Contains(string(c), "salvage-corrupt") {
			t.Fatalf("format did not corrupt a file (%v): the run proves nothing", err)
		}
		if !strings.Contains(out, "does not open") {
			t.Fatal("no corrupt block reached the decryptor: the run proves nothing")
		}
	})
	for i := 0; i < formatRuns(); i++ {
		t.Run(fmt.Sprintf("run %d", i+1), func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "RUNDIR")
			out := format(t, home, "disk.encryption=byokd", "wiredtiger.config="+ext, "runs.timer=1", "runs.ops=200000", "runs.rows=50000")
			if !strings.Contains(out, "successful run completed") {
				failed(t, home, out)
			}
			if f := formatDataFiles(t, home); len(f) > 0 {
				t.Fatalf("format's values in the clear in %v", f)
			}
		})
		t.Run(fmt.Sprintf("abort and recovery %d", i+1), func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "RUNDIR")
			out := format(t, home, "disk.encryption=byokd", "wiredtiger.config="+ext, "runs.timer=1", "runs.ops=0", "runs.rows=50000",
				"format.abort=1", "logging=1")
			if !strings.Contains(out, "aborting to test recovery") {
				failed(t, home, out)
			}
			cmd := wt.Command(wt.Format, "-Rqv", "-h", home)
			cmd.Dir = filepath.Dir(home)
			rec, _ := cmd.CombinedOutput()
			if !strings.Contains(string(rec), "successful run completed") {
				failed(t, home, out+"\n--- recovery ---\n"+string(rec))
			}
			if f := formatDataFiles(t, home); len(f) > 0 {
				t.Fatalf("format's values in the clear in %v", f)
			}
		})
	}
}

// formatDataFiles lists WiredTiger's files under home (data, metadata, log,
// history store; not format's own CONFIG, trace and statistics files) that
// hold format's value pattern.
func formatDataFiles(t *testing.T, home string) []string {
	t.Helper()
	var found []string
	err := filepath.Walk(home, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		name := fi.Name()
		if !strings.HasSuffix(name, ".wt") && !strings.HasPrefix(name, "WiredTigerLog.") && !strings.HasPrefix(name, "WiredTigerPreplog.") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), formatPattern) {
			found = append(found, strings.TrimPrefix(p, home+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
