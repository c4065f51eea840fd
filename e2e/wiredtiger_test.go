// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// wtEnv is a byokd with a WiredTiger database folder and the plugin.
type wtEnv struct {
	k     *testenv.KP
	root  string
	b     *testenv.Byokd
	wt    *testenv.WiredTiger
	db    string
	lib   string
	cache string
}

// eachLine runs a test against every supported WiredTiger line.
func eachLine(t *testing.T, f func(t *testing.T, line string)) {
	for _, line := range testenv.WiredTigerLines {
		t.Run("wt"+line, func(t *testing.T) { f(t, line) })
	}
}

// configure, when not nil, changes byokd's config.
func newWT(t *testing.T, line string, configure func(*config.Config)) *wtEnv {
	t.Helper()
	bins := testenv.Plugin(t)
	wt := testenv.WiredTigerLine(t, line)
	k := testenv.StartKP(t)
	root := k.RootKey(t, "db-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Config: configure})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	db := filepath.Join(b.Dir, "db")
	if err := os.Mkdir(db, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(db, 0o777)
	return &wtEnv{k: k, root: root, b: b, wt: wt, db: db, lib: filepath.Join(bins, "libbyokd-wiredtiger.so"), cache: "10MB"}
}

// config is the wiredtiger_open configuration with the byokd extension.
func (w *wtEnv) config(mode string, create bool) string {
	c := fmt.Sprintf(`cache_size=%s,extensions=[%s=(config="socket=%s,mode=%s")],encryption=(name=byokd,keyid=system)`,
		w.cache, w.lib, w.b.Socket, mode)
	if create {
		c = "create," + c
	}
	return c
}

func (w *wtEnv) harness(t *testing.T, cred *syscall.Credential, config string, args ...string) (string, error) {
	t.Helper()
	cmd := w.wt.Command(w.wt.Harness, append([]string{w.db, config}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func noMarkerInFiles(t *testing.T, dir, marker string) {
	t.Helper()
	for _, p := range markerFiles(t, dir, marker) {
		t.Errorf("%s holds the marker in the clear", p)
	}
}

// markerFiles lists the files under dir (at least 3 of them) that hold marker.
func markerFiles(t *testing.T, dir, marker string) []string {
	t.Helper()
	files := 0
	var found []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) {
			found = append(found, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	if err != nil || files < 3 {
		t.Fatalf("walk %s: %v (%d files)", dir, err, files)
	}
	return found
}

// TestWiredTigerEncryptsAtRest writes rows with a marker through the plugin
// in each mode, checks no database file holds the marker, and reads every row
// back with the harness and with the wt utility. A database written in one
// mode reads in the other: both use the same block format and keys.
func TestWiredTigerEncryptsAtRest(t *testing.T) {
	eachLine(t, func(t *testing.T, line string) {
		w := newWT(t, line, nil)
		const marker = "PLAINTEXT-MARKER-7f3a"
		for i, mode := range []string{"release", "strict"} {
			table := "table:rows_" + mode
			out, err := w.harness(t, nil, w.config(mode, i == 0), "insert", table, "keyid_"+mode, "5000", marker)
			if err != nil {
				t.Fatalf("%s insert: %v\n%s", mode, err, out)
			}
			if out, err := w.harness(t, nil, w.config(mode, false), "verify", table, "5000", marker); err != nil {
				t.Fatalf("%s verify: %v\n%s", mode, err, out)
			}
		}
		noMarkerInFiles(t, w.db, marker)
		// Release-mode rows read in strict mode and the other way round.
		if out, err := w.harness(t, nil, w.config("strict", false), "verify", "table:rows_release", "5000", marker); err != nil {
			t.Fatalf("cross-mode verify: %v\n%s", err, out)
		}
		if out, err := w.harness(t, nil, w.config("release", false), "verify", "table:rows_strict", "5000", marker); err != nil {
			t.Fatalf("cross-mode verify: %v\n%s", err, out)
		}
		// The wt utility loads the plugin from the database's own config.
		dump := w.wt.Command(w.wt.WT, "-h", w.db, "-C", w.config("release", false), "dump", "table:rows_release")
		out, err := dump.CombinedOutput()
		if err != nil || strings.Count(string(out), marker) != 5000 {
			t.Fatalf("wt dump: %v, %d rows with the marker\n%.2000s", err, strings.Count(string(out), marker), out)
		}
		if out, err := w.wt.Command(w.wt.WT, "-h", w.db, "-C", w.config("release", false), "verify", "table:rows_release").CombinedOutput(); err != nil {
			t.Fatalf("wt verify: %v\n%s", err, out)
		}
	})
}

// holder is a harness holding the database open.
type holder struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	log *testenv.SyncBuffer
}

func hold(t *testing.T, w *wtEnv, mode, table string) *holder {
	t.Helper()
	return startHolder(t, w.wt.Command(w.wt.Harness, w.db, w.config(mode, false), "hold", table))
}

// startHolder starts a program that holds a database open and answers
// commands on stdin, and waits for its "ready".
func startHolder(t *testing.T, cmd *exec.Cmd) *holder {
	t.Helper()
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	log := &testenv.SyncBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, in: in, out: bufio.NewReader(stdout), log: log}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line := h.line(t); line != "ready" {
		t.Fatalf("%s: %q\n%s", cmd.Path, line, log.String())
	}
	return h
}

// said reports whether the answer or the harness's stderr (copied
// asynchronously) holds msg, waiting a moment for stderr.
func (h *holder) said(answer, msg string) bool {
	for i := 0; i < 50; i++ {
		if strings.Contains(answer, msg) || strings.Contains(h.log.String(), msg) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (h *holder) line(t *testing.T) string {
	t.Helper()
	s, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("harness ended: %v\n%s", err, h.log.String())
	}
	return strings.TrimSpace(s)
}

func (h *holder) do(t *testing.T, cmd string) string {
	t.Helper()
	fmt.Fprintln(h.in, cmd)
	return h.line(t)
}

// TestWiredTigerLocksWithByokd: with the database open, disabling the root
// key makes writes and reads of uncached pages fail within the poll interval
// + 1 s, with a message that says why; after the key is enabled again and
// the database reopened, every committed row is there and nothing is
// corrupt.
func TestWiredTigerLocksWithByokd(t *testing.T) {
	eachLine(t, func(t *testing.T, line string) {
		w := newWT(t, line, nil)
		w.cache = "1MB" // smaller than the table: a scan must read pages from disk
		const marker = "LOCK-TEST-ROW"
		if out, err := w.harness(t, nil, w.config("release", true), "insert", "table:t", "orders", "20000", marker); err != nil {
			t.Fatalf("insert: %v\n%s", err, out)
		}
		disable := func() time.Time {
			w.k.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, w.root) })
			return time.Now()
		}
		enable := func() {
			w.k.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, w.root) })
			w.b.WaitState(t, w.b.Client(), pb.State_STATE_UNLOCKED, 3*time.Second)
		}
		// pollUntilErr repeats cmd until it fails, for at most poll interval + 1 s.
		pollUntilErr := func(h *holder, since time.Time, cmd func(i int) string) string {
			for i := 0; ; i++ {
				r := h.do(t, cmd(i))
				if strings.HasPrefix(r, "err") {
					if d := time.Since(since); d > 2*time.Second {
						t.Fatalf("failed only after %v", d)
					}
					t.Logf("%s failed %v after the disable", strings.Fields(cmd(i))[0], time.Since(since).Round(time.Millisecond))
					return r
				}
				if time.Since(since) > 2*time.Second {
					t.Fatalf("still working 2 s after the disable: %s\n%s", r, h.log.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}

		t.Run("writes fail", func(t *testing.T) {
			h := hold(t, w, "release", "table:t")
			if r := h.do(t, "insert 20000 10 "+marker); !strings.HasPrefix(r, "ok") {
				t.Fatalf("insert while unlocked: %s", r)
			}
			if r := h.do(t, "checkpoint"); r != "ok checkpoint" {
				t.Fatalf("checkpoint while unlocked: %s", r)
			}
			since := disable()
			defer enable()
			n := 200000
			r := pollUntilErr(h, since, func(i int) string {
				if i%2 == 0 {
					n += 10
					return fmt.Sprintf("insert %d 10 %s", n, marker)
				}
				return "checkpoint"
			})
			// WiredTiger reports the encryptor's message, then may panic the
			// connection (it treats a block it cannot write or read as fatal):
			// the database process must restart, and cannot while locked.
			if !h.said(r, "byokd: node locked: root key disabled") {
				t.Fatalf("the error does not say why: %s\n%s", r, h.log.String())
			}
			h.do(t, "quit")
		})
		t.Run("reads of uncached pages fail", func(t *testing.T) {
			h := hold(t, w, "release", "table:t")
			if r := h.do(t, "scan"); !strings.HasPrefix(r, "ok scanned") {
				t.Fatalf("scan while unlocked: %s", r)
			}
			since := disable()
			defer enable()
			r := pollUntilErr(h, since, func(int) string { return "scan" })
			if !h.said(r, "byokd: node locked: root key disabled") {
				t.Fatalf("the error does not say why: %s\n%s", r, h.log.String())
			}
			h.do(t, "quit")
		})
		// Reopened: the 20,000 rows and the 10 checkpointed before the lock are
		// there (with any checkpointed in the moments before byokd locked), every
		// row reads back exactly, and wt verify finds nothing corrupt.
		if out, err := w.harness(t, nil, w.config("release", false), "verify", "table:t", "+20010", marker); err != nil {
			t.Fatalf("verify after the locks: %v\n%s", err, out)
		}
		if out, err := w.wt.Command(w.wt.WT, "-h", w.db, "-C", w.config("release", false), "verify", "table:t").CombinedOutput(); err != nil {
			t.Fatalf("wt verify: %v\n%s", err, out)
		}
	})
}

// TestWiredTigerWithoutByokdDoesNotOpen: no byokd, no database — never a
// silent fall back to plaintext.
func TestWiredTigerWithoutByokdDoesNotOpen(t *testing.T) {
	eachLine(t, func(t *testing.T, line string) {
		w := newWT(t, line, nil)
		if out, err := w.harness(t, nil, w.config("release", true), "insert", "table:t", "k", "10", "x"); err != nil {
			t.Fatalf("insert: %v\n%s", err, out)
		}
		if err := w.b.Stop(); err != nil {
			t.Fatal(err)
		}
		out, err := w.harness(t, nil, w.config("release", false), "verify", "table:t", "10", "x")
		if err == nil || !strings.Contains(out, "byokd: cannot reach byokd at "+w.b.Socket) {
			t.Fatalf("opened without byokd: %v\n%s", err, out)
		}
	})
}

// TestWiredTigerRefusesAProcessByokdDoesNotAllow: a database process whose
// uid byokd does not allow cannot open the database.
func TestWiredTigerRefusesAProcessByokdDoesNotAllow(t *testing.T) {
	eachLine(t, func(t *testing.T, line string) {
		if os.Getuid() != 0 {
			t.Fatal("needs root to run the database process as nobody (CI runs as root)")
		}
		w := newWT(t, line, worldAccess)
		if err := os.Chmod(w.b.Socket, 0o666); err != nil {
			t.Fatal(err)
		}
		if out, err := w.harness(t, nil, w.config("release", true), "insert", "table:t", "k", "10", "x"); err != nil {
			t.Fatalf("insert as an allowed uid: %v\n%s", err, out)
		}
		_ = filepath.Walk(w.db, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				_ = os.Chmod(p, 0o777)
			}
			return nil
		})
		out, err := w.harness(t, &syscall.Credential{Uid: 65534, Gid: 65534}, w.config("release", false), "verify", "table:t", "10", "x")
		if err == nil || !strings.Contains(out, "caller not allowed") {
			t.Fatalf("nobody opened the database: %v\n%s", err, out)
		}
	})
}

// killWhen starts a writer that prints "<prefix>N" as N rows become
// durable, kills it (SIGKILL) once N reaches killAt, and returns the last N
// it printed. A writer that ends before it reaches killAt fails the test:
// it was not killed while writing.
func killWhen(t *testing.T, cmd *exec.Cmd, prefix string, from, killAt int) int {
	t.Helper()
	out, _ := cmd.StdoutPipe()
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n := from
	for sc.Scan() {
		if c, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, _ = strconv.Atoi(c)
			if n >= killAt {
				break
			}
		}
	}
	_ = cmd.Process.Kill()
	err := cmd.Wait()
	if n < killAt {
		t.Fatalf("the writer ended at %d of %d rows before it was killed: %v\n%s", n, killAt, err, stderr.String())
	}
	return n
}

// TestWiredTigerKilledWriterLosesNoCommittedRow kills a writer (with the
// byokd encryptor, log enabled) at random points while it inserts and
// checkpoints: after each kill the database reopens and every row reported
// committed reads back, unchanged.
func TestWiredTigerKilledWriterLosesNoCommittedRow(t *testing.T) {
	eachLine(t, func(t *testing.T, line string) {
		w := newWT(t, line, nil)
		const marker = "CRASH-ROW"
		runs := crashRuns() / 4
		if runs < 3 {
			runs = 3
		}
		cfg := func(create bool) string {
			return w.config("release", create) + ",log=(enabled=true),transaction_sync=(enabled=true,method=none),checkpoint=(wait=1)"
		}
		committed := 0
		for i := 0; i < runs; i++ {
			cmd := w.wt.Command(w.wt.Harness, w.db, cfg(i == 0), "insert", "table:t", "rows", "1000000", marker)
			cmd.Env = append(cmd.Environ(), "HARNESS_PROGRESS=1")
			// Each run inserts from 0 again: rows already there are rewritten
			// with the same value, so the count to verify is the highest seen.
			n := killWhen(t, cmd, "committed ", 0, 3000+rand.IntN(20000))
			committed = max(committed, n)
			if out, err := w.harness(t, nil, cfg(false), "verify", "table:t", fmt.Sprintf("+%d", committed), marker); err != nil {
				t.Fatalf("run %d: after a kill at %d committed rows: %v\n%s", i, n, err, out)
			}
		}
		if out, err := w.wt.Command(w.wt.WT, "-h", w.db, "-C", cfg(false), "verify", "table:t").CombinedOutput(); err != nil {
			t.Fatalf("wt verify: %v\n%s", err, out)
		}
	})
}
