// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestNoClearDEKOutsideLockedMemory runs byokd against Key Protect over TLS
// through provisioning, many proof unwraps, a rotation and a restart, then
// reads its whole memory through /proc/PID/mem (as root) and searches it
// for the DEK in every encoding an answer or a decoder could leave behind.
// The only copy allowed is the sealer's, in mlocked memory — found there, so
// the search demonstrably reads memory — and none may be anywhere else.
func TestNoClearDEKOutsideLockedMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("reading another process's memory needs root: run the tests as root, as CI does")
	}
	k := testenv.StartKPTLS(t)
	root := k.RootKey(t, "scan-root")
	o := testenv.Options{RootKeyID: root, Provision: true, Proof: "1s"}
	b := testenv.StartByokd(t, k, o)
	c := b.Client()
	st := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	time.Sleep(5 * time.Second)
	k.Do(t, "rotate", func(ctx context.Context, kc *kp.Client) error { return kc.Rotate(ctx, root, "") })
	waitKeyVersionChange(t, b, c, st.GetKeyVersion())
	time.Sleep(3 * time.Second)
	dek := customerUnwrap(t, k, root, keyFile(b))
	if n := k.Stats()["action_unwrap"].Requests; n < 6 {
		t.Fatalf("%d unwraps, want at least 6", n)
	}
	checkMemory(t, b.PID(), dek, "after provisioning, proofs and a rotation")

	// A restart unlocks by unwrapping, then proves again.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	o.Dir = b.Dir
	b = testenv.StartByokd(t, k, o)
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	time.Sleep(3 * time.Second)
	checkMemory(t, b.PID(), dek, "after a restart and proofs")
}

func waitKeyVersionChange(t *testing.T, b *testenv.Byokd, c pb.KeyProviderServiceClient, old string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if s, err := c.Status(ctx(t), &pb.StatusRequest{}); err == nil && s.GetKeyVersion() != old {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("byokd did not take up the rotation\n%s", b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// customerUnwrap unwraps the node's dek.json as the customer can, to learn
// the DEK the search looks for.
func customerUnwrap(t *testing.T, k *testenv.KP, root, path string) []byte {
	t.Helper()
	var rec struct {
		Ciphertext string   `json:"ciphertext"`
		AAD        []string `json:"aad"`
	}
	if err := json.Unmarshal(readFile(t, path), &rec); err != nil {
		t.Fatal(err)
	}
	var dek []byte
	k.Do(t, "unwrap as the customer", func(ctx context.Context, kc *kp.Client) error {
		pt, err := kc.Unwrap(ctx, root, []byte(rec.Ciphertext), &rec.AAD)
		if err == nil {
			dek, err = base64.StdEncoding.DecodeString(string(pt))
		}
		return err
	})
	if len(dek) != 32 {
		t.Fatalf("the customer's unwrap gave %d bytes", len(dek))
	}
	return dek
}

// checkMemory fails the test unless byokd's memory holds the DEK exactly
// once, raw, in mlocked memory (the memory sealer's copy), and in no other
// place or encoding.
func checkMemory(t *testing.T, pid int, dek []byte, when string) {
	t.Helper()
	needles := map[string][]byte{
		"raw":            dek,
		"base64":         []byte(base64.StdEncoding.EncodeToString(dek)),
		"base64 (raw)":   []byte(base64.RawStdEncoding.EncodeToString(dek)),
		"base64 (url)":   []byte(base64.RawURLEncoding.EncodeToString(dek)),
		"hex":            []byte(hex.EncodeToString(dek)),
		"hex (upper)":    []byte(strings.ToUpper(hex.EncodeToString(dek))),
		"base64 escaped": []byte(strings.ReplaceAll(base64.StdEncoding.EncodeToString(dek), "/", `\/`)),
	}
	var scanned, mlockedScanned int64
	inMlocked := 0
	var leaks []string
	testenv.EachRegion(t, pid, func(r testenv.Region, buf []byte) {
		if r.Mlocked {
			mlockedScanned += int64(len(buf))
		} else {
			scanned += int64(len(buf))
		}
		for name, needle := range needles {
			c := bytes.Count(buf, needle)
			if r.Mlocked && name == "raw" {
				inMlocked += c
				continue
			}
			if c > 0 {
				leaks = append(leaks, fmt.Sprintf("%d× %s in %s (mlocked: %v)", c, name, r.Name, r.Mlocked))
			}
		}
	}, 0)
	t.Logf("%s: searched %d MiB of byokd's memory outside mlocked mappings, %d KiB mlocked", when, scanned>>20, mlockedScanned>>10)
	if scanned < 1<<20 {
		t.Fatalf("only %d bytes searched: the search proves nothing", scanned)
	}
	if inMlocked != 1 {
		t.Fatalf("%d copies of the DEK in byokd's mlocked memory, want exactly the memory sealer's one (none: the search "+
			"does not see it and proves nothing; more: an mlocked buffer that was not destroyed)", inMlocked)
	}
	if len(leaks) > 0 {
		t.Fatalf("%s the DEK is in byokd's memory beyond the sealer's copy: %s", when, strings.Join(leaks, "; "))
	}
}
