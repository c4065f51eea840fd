// SPDX-License-Identifier: Apache-2.0

// Package e2e tests byokd, byokctl and kpemu together as real processes on
// a real unix socket.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	"github.com/byokd/byokd/kpemu"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func dataKey(t *testing.T, c pb.KeyProviderServiceClient, id string) []byte {
	t.Helper()
	return getDataKey(t, c, id).GetKey()
}

// getDataKey is GetDataKey with its generation.
func getDataKey(t *testing.T, c pb.KeyProviderServiceClient, id string) *pb.GetDataKeyResponse {
	t.Helper()
	r, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: id})
	if err != nil {
		t.Fatalf("GetDataKey(%q): %v", id, err)
	}
	if len(r.GetKey()) != 32 {
		t.Fatalf("data key of %d bytes", len(r.GetKey()))
	}
	return r
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("want %v, got %v", code, err)
	}
}

// worldAccess is an Options.Config that sets socket.allow_world_access,
// for the tests that open the socket to callers of other uids.
func worldAccess(c *config.Config) { c.Socket.AllowWorldAccess = true }

// TestLifecycle is the node's life against the customer's root key, with a
// 1 s poll interval: provision and unlock, serve keys, lock on disable within
// the poll interval + 1 s, unlock on enable, lock on delete, unlock on
// restore, and unlock from the stored key after a restart.
func TestLifecycle(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	st := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	if st.GetRootKeyId() != root || st.GetSealer() != "memory" || st.GetKeyVersion() == "" || st.GetLastCheck() == nil {
		t.Fatalf("status: %v", st)
	}
	fi, err := os.Stat(filepath.Join(b.Dir, "state", "dek.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("wrapped key file: %v %v", fi, err)
	}
	k1 := dataKey(t, c, "table:orders")
	if bytes.Equal(k1, dataKey(t, c, "table:users")) {
		t.Fatal("two key ids gave the same data key")
	}
	if !bytes.Equal(k1, dataKey(t, c, "table:orders")) {
		t.Fatal("the same key id gave two data keys")
	}
	enc, err := c.Encrypt(ctx(t), &pb.EncryptRequest{KeyId: "table:orders", Plaintext: bytes.Repeat([]byte("row"), 1000), Aad: []byte("page 7")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decrypt(ctx(t), &pb.DecryptRequest{KeyId: "table:orders", Ciphertext: enc.GetCiphertext(), Aad: []byte("page 7")})
	if err != nil || !bytes.Equal(dec.GetPlaintext(), bytes.Repeat([]byte("row"), 1000)) {
		t.Fatalf("decrypt: %v", err)
	}

	// Disable: LOCKED within the poll interval + 1 s, key calls refused.
	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	start := time.Now()
	st = b.WaitState(t, c, pb.State_STATE_LOCKED, 2*time.Second)
	t.Logf("locked %v after the disable: %s", time.Since(start).Round(time.Millisecond), st.GetReason())
	if st.GetReason() != "root key disabled" {
		t.Fatalf("reason %q", st.GetReason())
	}
	_, err = c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: "table:orders"})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(status.Convert(err).Message(), "root key disabled") {
		t.Fatalf("error does not name the reason: %v", err)
	}
	_, err = c.Decrypt(ctx(t), &pb.DecryptRequest{KeyId: "table:orders", Ciphertext: enc.GetCiphertext(), Aad: []byte("page 7")})
	wantCode(t, err, codes.FailedPrecondition)
	if out, _, code := b.Ctl(t, nil, "health"); code != 1 || !strings.Contains(out, "NOT_SERVING") {
		t.Fatalf("health while locked: %d %q", code, out)
	}

	// Enable: unlocked again, same keys.
	k.Do(t, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 3*time.Second)
	if !bytes.Equal(k1, dataKey(t, c, "table:orders")) {
		t.Fatal("data key changed across a lock")
	}
	if out, _, code := b.Ctl(t, nil, "health"); code != 0 || !strings.Contains(out, "SERVING") {
		t.Fatalf("health while unlocked: %d %q", code, out)
	}

	// Delete: locked; restore: unlocked.
	k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
		_, err := kc.DeleteKey(ctx, root, kp.ReturnMinimal)
		return err
	})
	st = b.WaitState(t, c, pb.State_STATE_LOCKED, 2*time.Second)
	if st.GetReason() != "root key deleted" {
		t.Fatalf("reason %q", st.GetReason())
	}
	k.Do(t, "restore", func(ctx context.Context, kc *kp.Client) error {
		_, err := kc.RestoreKey(ctx, root)
		return err
	})
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 3*time.Second)

	// Restart: unlocks from the stored key, same data keys.
	dek1, _ := os.ReadFile(filepath.Join(b.Dir, "state", "dek.json"))
	if err := b.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(b.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	b2 := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: b.Dir})
	c2 := b2.Client()
	b2.WaitState(t, c2, pb.State_STATE_UNLOCKED, 10*time.Second)
	if !bytes.Equal(k1, dataKey(t, c2, "table:orders")) {
		t.Fatal("data key changed across a restart")
	}
	dek2, _ := os.ReadFile(filepath.Join(b.Dir, "state", "dek.json"))
	if !bytes.Equal(dek1, dek2) {
		t.Fatal("the wrapped key file changed across a restart")
	}
	logs := b.Logs() + b2.Logs()
	for _, want := range []string{`"action":"provision"`, `"action":"unlock"`, `"state":"LOCKED"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no audit line with %s", want)
		}
	}
	if strings.Contains(logs, testenv.APIKey) {
		t.Fatal("the API key is in byokd's logs")
	}
}

// rotate rotates the root key and waits until byokd, unlocked, reports a key
// version other than v1: the re-wrapped key is persisted by then (the
// version byokd reports changes only after the file is replaced).
func rotate(t *testing.T, k *testenv.KP, root string, b *testenv.Byokd, c pb.KeyProviderServiceClient, v1 string) {
	t.Helper()
	k.Do(t, "rotate", func(ctx context.Context, kc *kp.Client) error { return kc.Rotate(ctx, root, "") })
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.Status(ctx(t), &pb.StatusRequest{})
		if err == nil && s.GetKeyVersion() != v1 && s.GetState() == pb.State_STATE_UNLOCKED {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation not picked up: %v %v\n%s", s, err, b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRotationPersistsRewrappedKeyWithSameDataKeys(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	st := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	v1 := st.GetKeyVersion()
	k1 := dataKey(t, c, "db:admin")
	path := filepath.Join(b.Dir, "state", "dek.json")
	before, _ := os.ReadFile(path)

	rotate(t, k, root, b, c, v1)
	after, _ := os.ReadFile(path)
	if bytes.Equal(before, after) {
		t.Fatal("the re-wrapped key was not persisted")
	}
	prev, err := os.ReadFile(path + ".prev")
	if err != nil || !bytes.Equal(prev, before) {
		t.Fatalf("previous version not kept: %v", err)
	}
	var rec struct {
		KeyVersion string `json:"key_version"`
	}
	if err := json.Unmarshal(after, &rec); err != nil || rec.KeyVersion == v1 || rec.KeyVersion == "" {
		t.Fatalf("stored key version %q (was %q): %v", rec.KeyVersion, v1, err)
	}
	if !bytes.Equal(k1, dataKey(t, c, "db:admin")) {
		t.Fatal("data key changed across a rotation")
	}
	if !strings.Contains(b.Logs(), `"action":"rotation"`) {
		t.Fatal("no audit line for the rotation")
	}
}

func TestOutageShorterThanGraceKeepsServingLongerLocks(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, OfflineGrace: "4s"})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	k1 := dataKey(t, c, "t")

	if err := k.SetFaults(kpemu.Faults{Outage: true}); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, c, pb.State_STATE_DEGRADED, 3*time.Second)
	// Within the grace every key call is answered.
	for i := 0; i < 10; i++ {
		if !bytes.Equal(k1, dataKey(t, c, "t")) {
			t.Fatal("wrong key while degraded")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, _, code := b.Ctl(t, nil, "health"); code != 0 {
		t.Fatalf("health while degraded: %d %s", code, out)
	}
	_ = k.SetFaults(kpemu.Faults{})
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 3*time.Second)

	// A longer outage locks when the grace runs out.
	_ = k.SetFaults(kpemu.Faults{Outage: true})
	b.WaitState(t, c, pb.State_STATE_DEGRADED, 3*time.Second)
	st := b.WaitState(t, c, pb.State_STATE_LOCKED, 7*time.Second)
	if !strings.Contains(st.GetReason(), "offline_grace") {
		t.Fatalf("reason %q", st.GetReason())
	}
	_, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: "t"})
	wantCode(t, err, codes.FailedPrecondition)
	_ = k.SetFaults(kpemu.Faults{})
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
}

func TestCallersAreCheckedByPeerCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs byokctl as nobody and needs root (CI runs as root)")
	}
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	// The socket must be reachable by nobody for the peer check to be
	// what refuses it; that loosening is logged.
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true,
		Config: worldAccess})
	if err := os.Chmod(b.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	dataKey(t, c, "allowed")

	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	_, errOut, code := b.Ctl(t, nobody, "status")
	if code == 0 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("nobody got status: code %d, %s", code, errOut)
	}
	if !strings.Contains(b.Logs(), `"action":"refuse"`) || !strings.Contains(b.Logs(), `"uid":65534`) {
		t.Fatal("no audit line for the refused caller")
	}
	if !strings.Contains(b.Logs(), "allow_world_access") {
		t.Fatal("the loosened socket setting was not logged at start")
	}
	out, _, code := b.Ctl(t, nil, "status", "--json")
	var js map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || js["state"] != "UNLOCKED" || js["root_key_id"] != root {
		t.Fatalf("status --json: %d %s", code, out)
	}
}

func TestBadRequestsGetInvalidArgument(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	for name, id := range map[string]string{
		"empty":        "",
		"too long":     strings.Repeat("k", 256),
		"control char": "table\n1",
		"non-ASCII":    "tablé",
	} {
		_, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: id})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s key id: %v", name, err)
		}
	}
	enc, err := c.Encrypt(ctx(t), &pb.EncryptRequest{KeyId: "a", Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	blk := enc.GetCiphertext()
	tampered := bytes.Clone(blk)
	tampered[len(tampered)-1] ^= 1
	for name, req := range map[string]*pb.DecryptRequest{
		"other key id": {KeyId: "b", Ciphertext: blk},
		"tampered":     {KeyId: "a", Ciphertext: tampered},
		"other aad":    {KeyId: "a", Ciphertext: blk, Aad: []byte("x")},
		"garbage":      {KeyId: "a", Ciphertext: []byte("garbage")},
	} {
		_, err := c.Decrypt(ctx(t), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err = c.Encrypt(ctx(t), &pb.EncryptRequest{KeyId: "a", Aad: make([]byte, 5000)})
	wantCode(t, err, codes.InvalidArgument)
	if exited, err := b.Exited(); exited {
		t.Fatalf("byokd died: %v", err)
	}
}

func TestStartWithoutStoredKeyAndNoProvisionStaysLocked(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root})
	c := b.Client()
	st := b.WaitState(t, c, pb.State_STATE_LOCKED, 5*time.Second)
	if !strings.Contains(st.GetReason(), "provision = false") {
		t.Fatalf("reason %q", st.GetReason())
	}
}

func TestCorruptOrForeignKeyFileStaysLockedAndIsNotReplaced(t *testing.T) {
	for name, content := range map[string]string{
		"corrupt": `{"schema":1,"root_key_id":`,
		"foreign": `{"schema":1,"root_key_id":"0e0e0e0e-0000-4000-8000-000000000000","instance_id":"` + testenv.InstanceID +
			`","cluster_id":"test-cluster","ciphertext":"eA==","key_version":"v","aad":["byokd"],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) {
			k := testenv.StartKP(t)
			root := k.RootKey(t, "node-root")
			dir := testenv.Dir(t)
			path := filepath.Join(dir, "state", "dek.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Dir: dir})
			c := b.Client()
			st := b.WaitState(t, c, pb.State_STATE_LOCKED, 5*time.Second)
			t.Logf("reason: %s", st.GetReason())
			time.Sleep(1500 * time.Millisecond) // a poll or two later
			got, _ := os.ReadFile(path)
			if string(got) != content {
				t.Fatal("byokd replaced a wrapped key file it could not use")
			}
		})
	}
}

// TestRotationPolicyRewrapsOnSchedule: the root key rotates on the
// schedule of a rotation policy — the way customers configure rotation —
// with a policy month of 2 s in kpemu. byokd takes each rotation up by
// itself: dek.json is re-wrapped under the newest version, and the data
// keys never change.
func TestRotationPolicyRewrapsOnSchedule(t *testing.T) {
	k := testenv.StartKP(t, func(c *kpemu.Config) { c.MonthLength = 2 * time.Second })
	root := k.RootKey(t, "policy-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	st := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	before := dataKey(t, c, "orders")
	k.Do(t, "rotation policy", func(ctx context.Context, kc *kp.Client) error {
		_, err := kc.SetRotationPolicy(ctx, root, 1)
		return err
	})
	seen := map[string]bool{st.GetKeyVersion(): true}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("byokd took up %d key versions in 20 s, want 4 (3 scheduled rotations)\n%s", len(seen), b.Logs())
		}
		s, err := c.Status(ctx(t), &pb.StatusRequest{})
		if err != nil || s.GetState() != pb.State_STATE_UNLOCKED {
			t.Fatalf("status during rotations: %v %v", s, err)
		}
		seen[s.GetKeyVersion()] = true
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(dataKey(t, c, "orders"), before) {
		t.Fatal("a rotation changed the data key")
	}
	if v := storedVersion(t, b); !seen[v] || v == st.GetKeyVersion() {
		t.Fatalf("dek.json key_version %q; versions seen %v", v, seen)
	}
	if n := strings.Count(b.Logs(), `"action":"rotation"`); n < 3 {
		t.Fatalf("%d re-wraps persisted, want at least 3", n)
	}
}
