// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

// mongod 8.0's wiredtiger_open configuration, as WiredTigerKVEngine builds
// it (src/mongo/db/storage/wiredtiger/wiredtiger_kv_engine.cpp on
// mongodb/mongo's v8.0 branch, and mongod 8.0's "Opening WiredTiger" log
// line): a journal in journal/ compressed with snappy, statistics, the file
// manager and eviction settings. cache_size is mongod's formula's output on
// a large host; the tests set a small one so that pages are read from disk.
// The storage.wiredTiger.engineConfig.configString (our extension and
// encryption) is appended last, as mongod appends it.
const mongodOpenConfig = "create,cache_size=%s,session_max=33000,eviction=(threads_min=4,threads_max=4),config_base=false," +
	"statistics=(fast),log=(enabled=true,remove=true,path=journal,compressor=snappy)," +
	"builtin_extension_config=(zstd=(compression_level=6))," +
	"file_manager=(close_idle_time=600,close_scan_interval=10,close_handle_minimum=2000),statistics_log=(wait=0)," +
	"json_output=(error,message),verbose=[recovery_progress:1,checkpoint_progress:1,compact_progress:1,backup:0," +
	"checkpoint:0,compact:0,evict:0,history_store:0,recovery:0,rts:0,salvage:0,tiered:0,timestamp:0,transaction:0," +
	"verify:0,log:0],%s"

// mongod 8.0's create strings for a collection (WiredTigerRecordStore) and
// an index (WiredTigerIndex), with --wiredTigerCollectionConfigString and
// --wiredTigerIndexConfigString (our encryption) where mongod puts them:
// after its defaults, before the settings users may not override.
const (
	mongodCollectionConfig = "type=file,memory_page_max=10m,split_pct=90,leaf_value_max=64MB,checksum=on,block_compressor=snappy," +
		"%s,key_format=q,value_format=u,app_metadata=(formatVersion=1),log=(enabled=true)"
	mongodIndexConfig = "type=file,internal_page_max=16k,leaf_page_max=16k,checksum=on,prefix_compression=true,," +
		"%s,key_format=u,value_format=u,app_metadata=(formatVersion=14),log=(enabled=true)"
)

// TestWiredTigerUnderMongodConfig opens WiredTiger 11.2 and 11.3 with
// mongod's own configuration plus the byokd extension, as
// storage.wiredTiger.engineConfig.configString adds it, and a collection
// and its _id index with mongod's create strings plus our encryption:
// nothing under the database folder (journal included) holds a document in
// the clear; every document and index entry is back after a clean close,
// and every acknowledged one after a kill -9 and recovery; a lock makes
// writes and reads of uncached pages fail with byokd's reason; after the
// unlock everything reads back and wt verify is clean.
func TestWiredTigerUnderMongodConfig(t *testing.T) {
	for _, line := range []string{"11.2", "11.3"} {
		t.Run("wt"+line, func(t *testing.T) { testMongodConfig(t, line) })
	}
}

func testMongodConfig(t *testing.T, line string) {
	w := newWT(t, line, nil)
	const marker = "MONGOD-DOC-MARKER"

	// The control: the same configuration without our encryption leaves
	// the documents readable in the collection file and the journal, though
	// snappy compresses both, so the search below can find them.
	plain := t.TempDir()
	if err := os.Mkdir(filepath.Join(plain, "journal"), 0o777); err != nil {
		t.Fatal(err)
	}
	popen := fmt.Sprintf(mongodOpenConfig, "5M", "")
	if out, err := w.wt.Command(w.wt.Mongod, plain, popen, fmt.Sprintf(mongodCollectionConfig, ""), fmt.Sprintf(mongodIndexConfig, ""),
		"load", "0", "2000", marker).CombinedOutput(); err != nil {
		t.Fatalf("load without encryption: %v\n%s", err, out)
	}
	found := strings.Join(markerFiles(t, plain, marker), " ")
	if !strings.Contains(found, "journal/WiredTigerLog.") || !strings.Contains(found, "collection-0.wt") {
		t.Fatalf("without encryption the documents are not found in the journal and the collection (%s): the search proves nothing", found)
	}

	if err := os.Mkdir(filepath.Join(w.db, "journal"), 0o777); err != nil { // mongod creates it
		t.Fatal(err)
	}
	engineConfig := fmt.Sprintf(`extensions=[%s=(config="socket=%s,mode=release")],encryption=(name=byokd,keyid=system)`, w.lib, w.b.Socket)
	open := fmt.Sprintf(mongodOpenConfig, "5M", engineConfig)
	coll := fmt.Sprintf(mongodCollectionConfig, "encryption=(name=byokd,keyid=test)")
	index := fmt.Sprintf(mongodIndexConfig, "encryption=(name=byokd,keyid=test)")
	run := func(args ...string) (string, error) {
		out, err := w.wt.Command(w.wt.Mongod, append([]string{w.db, open, coll, index}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("load", "0", "20000", marker); err != nil {
		t.Fatalf("load: %v\n%s", err, out)
	}
	if out, err := run("verify", "20000", marker); err != nil {
		t.Fatalf("verify after a clean close: %v\n%s", err, out)
	}
	journal, _ := filepath.Glob(filepath.Join(w.db, "journal", "WiredTigerLog.*"))
	if len(journal) == 0 {
		t.Fatal("no journal file in journal/: not mongod's configuration")
	}
	noMarkerInFiles(t, w.db, marker)

	// kill -9 while writing: every acknowledged document is back.
	durable := 20000
	for i := 0; i < 3; i++ {
		cmd := w.wt.Command(w.wt.Mongod, w.db, open, coll, index, "load", strconv.Itoa(durable), "1000000", marker)
		cmd.Env = append(cmd.Environ(), "MONGODLIKE_PROGRESS=1")
		acked := killWhen(t, cmd, "durable ", durable, durable+2000+rand.IntN(5000))
		if out, err := run("verify", fmt.Sprintf("+%d", acked), marker); err != nil {
			t.Fatalf("kill -9 at %d acknowledged documents: %v\n%s", acked, err, out)
		}
		durable = acked
	}
	t.Logf("WiredTiger %s: %d documents back after 3 kills", line, durable)
	noMarkerInFiles(t, w.db, marker)

	// The lock.
	h := startHolder(t, w.wt.Command(w.wt.Mongod, w.db, open, coll, index, "hold"))
	for _, c := range []string{"scan", fmt.Sprintf("write %d 100 %s", durable, marker), "checkpoint"} {
		if r := h.do(t, c); !strings.HasPrefix(r, "ok") {
			t.Fatalf("%s while unlocked: %s\n%s", c, r, h.log.String())
		}
	}
	durable += 100
	w.k.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, w.root) })
	since := time.Now()
	failed := map[string]bool{}
	for i := 0; len(failed) < 2; i++ {
		if time.Since(since) > 3*time.Second {
			t.Fatalf("3 s after the disable, only %v failed\n%s", failed, h.log.String())
		}
		for _, c := range []string{"scan", fmt.Sprintf("write %d 10 %s", 2000000+10*i, marker)} {
			op := strings.Fields(c)[0]
			if failed[op] {
				continue
			}
			r := h.do(t, c)
			if op == "write" && strings.HasPrefix(r, "ok") {
				r = h.do(t, "checkpoint") // a write reaches the disk at a checkpoint
			}
			if strings.HasPrefix(r, "err") {
				if !h.said(r, "byokd: node locked: root key disabled") {
					t.Fatalf("%s failed without byokd's reason: %s\n%s", op, r, h.log.String())
				}
				t.Logf("%s failed %v after the disable", op, time.Since(since).Round(time.Millisecond))
				failed[op] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.do(t, "quit")
	w.k.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, w.root) })
	time.Sleep(2 * time.Second) // byokd's poll
	if out, err := run("verify", fmt.Sprintf("+%d", durable), marker); err != nil {
		t.Fatalf("verify after the unlock: %v\n%s", err, out)
	}
	for _, table := range []string{"table:collection-0", "table:index-1"} {
		if out, err := w.wt.Command(w.wt.WT, "-h", w.db, "-C", open, "verify", table).CombinedOutput(); err != nil {
			t.Fatalf("wt verify %s: %v\n%s", table, err, out)
		}
	}
	noMarkerInFiles(t, w.db, marker)
}
