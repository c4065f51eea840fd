// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// crashRuns is how many kill -9 runs each crash test makes: 20 in CI,
// CRASH_RUNS=200 for the long form.
func crashRuns() int {
	if n, err := strconv.Atoi(os.Getenv("CRASH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// checkKeyFile fails unless dek.json is absent or a whole, valid record.
func checkKeyFile(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Schema     int    `json:"schema"`
		Ciphertext string `json:"ciphertext"`
	}
	if len(b) == 0 || json.Unmarshal(b, &rec) != nil || rec.Schema != 1 || rec.Ciphertext == "" {
		t.Fatalf("a crash left a broken wrapped key file (%d bytes):\n%s", len(b), b)
	}
	return true
}

// TestKillDuringProvisioningNeverLosesTheKey kills byokd at random points
// while it provisions. After each kill the key file is absent or whole, and
// a restarted byokd unlocks; a key served before the kill is the one served
// after it.
func TestKillDuringProvisioningNeverLosesTheKey(t *testing.T) {
	k := testenv.StartKP(t)
	for i := range crashRuns() {
		root := k.RootKey(t, "crash-root")
		dir := testenv.Dir(t)
		b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Dir: dir})
		var before []byte
		kill := time.Duration(rand.IntN(40)) * time.Millisecond
		deadline := time.Now().Add(kill)
		c := b.Client()
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
			if r, err := c.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: "probe"}); err == nil && before == nil {
				before = r.GetKey()
			}
			cancel()
		}
		b.Kill()
		existed := checkKeyFile(t, filepath.Join(dir, "state", "dek.json"))
		b2 := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Dir: dir})
		c2 := b2.Client()
		b2.WaitState(t, c2, pb.State_STATE_UNLOCKED, 10*time.Second)
		after := dataKey(t, c2, "probe")
		if before != nil && !bytes.Equal(before, after) {
			t.Fatalf("run %d: the data key changed across the crash (file existed: %v)", i, existed)
		}
		if err := b2.Stop(); err != nil {
			t.Fatal(err)
		}
		checkKeyFile(t, filepath.Join(dir, "state", "dek.json"))
	}
}

// TestKillDuringRewrapNeverLosesTheKey rotates the root key and kills byokd
// at random points while it persists the re-wrapped key: the file is always
// whole and unwraps to the same DEK after a restart.
func TestKillDuringRewrapNeverLosesTheKey(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "crash-root")
	dir := testenv.Dir(t)
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Dir: dir})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	want := dataKey(t, b.Client(), "probe")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state", "dek.json")
	for i := range crashRuns() {
		k.Do(t, "rotate", func(ctx context.Context, c *kp.Client) error { return c.Rotate(ctx, root, "") })
		b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: dir})
		// The first unlock unwraps a ciphertext of an older key version
		// and persists the re-wrapped one: kill somewhere around it.
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		b.Kill()
		if !checkKeyFile(t, path) {
			t.Fatalf("run %d: the wrapped key file is gone", i)
		}
		b2 := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: dir})
		c2 := b2.Client()
		b2.WaitState(t, c2, pb.State_STATE_UNLOCKED, 10*time.Second)
		if got := dataKey(t, c2, "probe"); !bytes.Equal(got, want) {
			t.Fatalf("run %d: the data key changed across a crash during rewrap", i)
		}
		if err := b2.Stop(); err != nil {
			t.Fatal(err)
		}
		checkKeyFile(t, path)
	}
}
