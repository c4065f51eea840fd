// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestKMIPKeysLeaveNoCopyInMemory: a database registers its master key
// over KMIP, gets it back and encrypts with it many times over many
// connections; once the node locks, neither the master key nor the key that
// seals it at rest is anywhere in byokd's memory. (Before byokd wiped
// crypto/tls's record buffer, the Register request's plaintext stayed
// there: one copy of the master key.)
func TestKMIPKeysLeaveNoCopyInMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("reading another process's memory needs root: run the tests as root, as CI does")
	}
	n := startKMIPNode(t)
	k, root, b, py := n.k, n.root, n.b, n.py
	c := b.Client()

	master := make([]byte, 32)
	rand.Read(master)
	id := py.ok(t, "register", hex.EncodeToString(master), "scan-master", "activate", "@")[0].str(t)
	for range 5 {
		ops := []string{}
		for range 10 {
			ops = append(ops, "get", id, "state", id, "encrypt", id, "00112233445566778899aabbccddeeff")
		}
		py.ok(t, ops...)
	}
	dek := customerUnwrap(t, k, root, keyFile(b))
	info, err := datakey.KMIPInfo("test-cluster", id)
	if err != nil {
		t.Fatal(err)
	}
	sealing, err := datakey.Derive(dek, info)
	if err != nil {
		t.Fatal(err)
	}

	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_LOCKED, 10*time.Second)
	time.Sleep(time.Second)
	var leaks []string
	var scanned int64
	testenv.EachRegion(t, b.PID(), func(r testenv.Region, buf []byte) {
		scanned += int64(len(buf))
		for name, needle := range map[string][]byte{
			"master key": master, "master key (hex)": []byte(hex.EncodeToString(master)),
			"sealing key": sealing[:], "DEK": dek,
		} {
			if n := bytes.Count(buf, needle); n > 0 {
				leaks = append(leaks, fmt.Sprintf("%d× %s in %s (mlocked %v)", n, name, r.Name, r.Mlocked))
			}
		}
	}, 0)
	t.Logf("searched %d MiB of byokd's memory", scanned>>20)
	if scanned < 1<<20 {
		t.Fatalf("only %d bytes searched", scanned)
	}
	if len(leaks) > 0 {
		t.Fatalf("after the lock, byokd's memory holds:\n%s", strings.Join(leaks, "\n"))
	}
}
