// SPDX-License-Identifier: Apache-2.0

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

// The tests in this file each reproduce one way byokd used to serve the
// wrong key or lock a fleet by mistake, through real byokd and byokctl
// processes against kpemu.

func keyFile(b *testenv.Byokd) string { return filepath.Join(b.Dir, "state", "dek.json") }

// putFile replaces path with content atomically, mode 0600, as an operator
// restoring a backup would.
func putFile(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".test-tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// latestVersion is the root key's newest version, as the customer reads it.
func latestVersion(t *testing.T, k *testenv.KP, root string) string {
	t.Helper()
	var v string
	k.Do(t, "read the root key", func(ctx context.Context, kc *kp.Client) error {
		key, err := kc.GetKeyMetadata(ctx, root)
		if err == nil && key.KeyVersion != nil {
			v = key.KeyVersion.ID
		}
		return err
	})
	return v
}

// storedVersion is the key_version in byokd's dek.json.
func storedVersion(t *testing.T, b *testenv.Byokd) string {
	t.Helper()
	var rec struct {
		KeyVersion string `json:"key_version"`
	}
	if err := json.Unmarshal(readFile(t, keyFile(b)), &rec); err != nil {
		t.Fatal(err)
	}
	return rec.KeyVersion
}

// startUnlocked starts kpemu with a root key and a byokd on it, and waits
// until byokd unlocks.
func startUnlocked(t *testing.T, o testenv.Options) (*testenv.KP, string, *testenv.Byokd, pb.KeyProviderServiceClient) {
	t.Helper()
	k := testenv.StartKP(t)
	o.RootKeyID = k.RootKey(t, "root")
	b := testenv.StartByokd(t, k, o)
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	return k, o.RootKeyID, b, c
}

// waitCause waits for LOCKED with the given cause.
func waitCause(t *testing.T, b *testenv.Byokd, c pb.KeyProviderServiceClient, cause string, d time.Duration) *pb.StatusResponse {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *pb.StatusResponse
	for time.Now().Before(deadline) {
		if s, err := c.Status(ctx(t), &pb.StatusRequest{}); err == nil {
			last = s
			if s.GetState() == pb.State_STATE_LOCKED && s.GetCause() == cause {
				return s
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("not LOCKED with cause %q within %v; last %v\n%s", cause, d, last, b.Logs())
	return nil
}

// watchTimeline records every state byokd reports on a Watch stream.
func watchTimeline(t *testing.T, c pb.KeyProviderServiceClient) *timeline {
	t.Helper()
	wctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Watch(wctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	tl := &timeline{}
	tl.add(first.GetStatus().GetState())
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			tl.add(m.GetStatus().GetState())
		}
	}()
	return tl
}

// TestKeyFileFromAnotherNodeLocksUntilAnOperatorAccepts: a dek.json copied
// from another node of the same cluster unwraps fine — to another key. The
// node locks at its next proof, stays locked over polls and a restart, and
// serves the other key only after byokctl accept-key names both
// fingerprints, under generation 2.
func TestKeyFileFromAnotherNodeLocksUntilAnOperatorAccepts(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "cluster-root")
	a := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Proof: "1s"})
	ca := a.Client()
	stA := a.WaitState(t, ca, pb.State_STATE_UNLOCKED, 10*time.Second)
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	stB := b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	keyA, keyB := getDataKey(t, ca, "t"), getDataKey(t, b.Client(), "t")
	fpA, fpB := stA.GetKeyFingerprint(), stB.GetKeyFingerprint()
	if len(fpA) != 16 || fpA == fpB || stA.GetGeneration() != 1 || keyA.GetGeneration() != 1 {
		t.Fatalf("fingerprints %q %q, generation %d %d", fpA, fpB, stA.GetGeneration(), keyA.GetGeneration())
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	tl := watchTimeline(t, ca)
	putFile(t, keyFile(a), readFile(t, keyFile(b)))
	st := waitCause(t, a, ca, "key-changed", 5*time.Second)
	locked := time.Now()
	if st.GetOfferedFingerprint() != fpB || st.GetKeyFingerprint() != fpA ||
		!strings.Contains(st.GetOperatorAction(), "byokctl accept-key "+fpA+" "+fpB) {
		t.Fatalf("locked status: %v", st)
	}
	if _, err := ca.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: "t"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GetDataKey while locked: %v", err)
	}
	time.Sleep(3 * time.Second)
	if tl.saw(pb.State_STATE_UNLOCKED, locked, time.Now()) || tl.saw(pb.State_STATE_DEGRADED, locked, time.Now()) {
		t.Fatal("polling served keys again")
	}
	waitCause(t, a, ca, "key-changed", time.Second)
	// A restart does not unlock either.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	// nobody may call (allowed_gids), but not accept another key.
	a = testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Proof: "1s", Dir: a.Dir,
		Config: func(c *config.Config) { c.Socket.AllowedGIDs = []int{65534}; worldAccess(c) }})
	ca = a.Client()
	waitCause(t, a, ca, "key-changed", 10*time.Second)
	if err := os.Chmod(a.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if out, errOut, code := a.Ctl(t, nobody, "status"); code != 0 || !strings.Contains(out, "ACTION NEEDED") {
		t.Fatalf("status as nobody: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := a.Ctl(t, nobody, "accept-key", fpA, fpB); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("accept-key as nobody: exit %d: %s", code, errOut)
	}
	if _, errOut, code := a.Ctl(t, nil, "accept-key", fpB, fpA); code != 1 || !strings.Contains(errOut, "does not match") {
		t.Fatalf("accept-key with the fingerprints swapped: exit %d: %s", code, errOut)
	}
	out, errOut, code := a.Ctl(t, nil, "accept-key", fpA, fpB)
	if code != 0 || !strings.Contains(out, fpB+" (generation 2)") {
		t.Fatalf("accept-key: exit %d: %s %s", code, out, errOut)
	}
	st = a.WaitState(t, ca, pb.State_STATE_UNLOCKED, 5*time.Second)
	got := getDataKey(t, ca, "t")
	if st.GetGeneration() != 2 || st.GetKeyFingerprint() != fpB || got.GetGeneration() != 2 || !bytes.Equal(got.GetKey(), keyB.GetKey()) {
		t.Fatalf("after accept-key: %v, data key generation %d, the other node's key: %v", st, got.GetGeneration(), bytes.Equal(got.GetKey(), keyB.GetKey()))
	}
	if !strings.Contains(a.Logs(), `"action":"accept-key","from":"`+fpA+`"`) {
		t.Fatalf("no audit line for accept-key:\n%s", a.Logs())
	}
}

// TestKeyFileRemovedWhileRunningIsWrittenBackNotReplaced: with provision =
// true, a dek.json that disappears on a running node used to be replaced
// by a new key. It is written back from the wrapped key the node holds,
// the node never locks, and the data keys stay the same.
func TestKeyFileRemovedWhileRunningIsWrittenBackNotReplaced(t *testing.T) {
	k, _, b, c := startUnlocked(t, testenv.Options{Provision: true, Proof: "1s"})
	tl := watchTimeline(t, c)
	before := getDataKey(t, c, "t")
	orig := readFile(t, keyFile(b))
	from := time.Now()
	if err := os.Remove(keyFile(b)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, err := os.ReadFile(keyFile(b)); err == nil {
			if !bytes.Equal(got, orig) {
				t.Fatalf("dek.json came back different:\n%s\nwas\n%s", got, orig)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dek.json not written back within 5s\n%s", b.Logs())
		}
		time.Sleep(25 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	if tl.saw(pb.State_STATE_LOCKED, from, time.Now()) {
		t.Fatal("the node locked")
	}
	if after := getDataKey(t, c, "t"); !bytes.Equal(after.GetKey(), before.GetKey()) || after.GetGeneration() != 1 {
		t.Fatal("the node serves another key")
	}
	if n := k.Stats()["action_wrap"].Requests; n != 1 {
		t.Fatalf("%d keys created, want 1", n)
	}
	if !strings.Contains(b.Logs(), `"action":"restore-wrapped-key"`) {
		t.Fatal("no audit line for the write-back")
	}
}

// TestMissingKeyFileAtStartLocksAndNamesTheBackup: a node that served a
// key starts without its dek.json (and provision = true): it locks, says
// where the backup goes, never provisions, and unlocks once the file is
// back.
func TestMissingKeyFileAtStartLocksAndNamesTheBackup(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	o := testenv.Options{RootKeyID: root, Provision: true}
	b := testenv.StartByokd(t, k, o)
	st := b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	backup := readFile(t, keyFile(b))
	if err := os.Remove(keyFile(b)); err != nil {
		t.Fatal(err)
	}
	o.Dir = b.Dir
	b = testenv.StartByokd(t, k, o)
	c := b.Client()
	locked := waitCause(t, b, c, "wrapped-key-missing", 10*time.Second)
	if !strings.Contains(locked.GetReason(), keyFile(b)) || !strings.Contains(locked.GetOperatorAction(), "restore "+keyFile(b)) ||
		!strings.Contains(locked.GetOperatorAction(), "byokctl forget-key "+st.GetKeyFingerprint()) {
		t.Fatalf("locked status: %v", locked)
	}
	time.Sleep(2 * time.Second)
	waitCause(t, b, c, "wrapped-key-missing", time.Second)
	if n := k.Stats()["action_wrap"].Requests; n != 1 {
		t.Fatalf("%d keys created, want 1: provisioned over a served key", n)
	}
	putFile(t, keyFile(b), backup)
	if s := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second); s.GetKeyFingerprint() != st.GetKeyFingerprint() {
		t.Fatalf("unlocked on %s, want %s", s.GetKeyFingerprint(), st.GetKeyFingerprint())
	}
}

// TestClusterBindingComesFromTheConfig: another cluster's dek.json with its
// cluster_id label edited used to unlock, since byokd unwrapped with the
// aad stored in the file. It does not: byokd checks the label against its
// config, and unwraps with the aad of its own cluster_id, which Key
// Protect refuses for another cluster's key.
func TestClusterBindingComesFromTheConfig(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	other := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, ClusterID: "other-cluster"})
	other.WaitState(t, other.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(readFile(t, keyFile(other)), &rec); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(rec map[string]any)
		cause string
	}{
		{"label edited", func(rec map[string]any) { rec["cluster_id"] = "test-cluster" }, "wrapped-key-foreign"},
		{"label and aad edited", func(rec map[string]any) {
			rec["cluster_id"] = "test-cluster"
			rec["aad"] = []string{"byokd", "cluster:test-cluster"}
		}, "wrapped-key-refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := map[string]any{}
			for k, v := range rec {
				edited[k] = v
			}
			tc.edit(edited)
			content, _ := json.MarshalIndent(edited, "", "  ")
			dir := testenv.Dir(t)
			putFile(t, filepath.Join(dir, "state", "dek.json"), content)
			b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: dir})
			c := b.Client()
			tl := watchTimeline(t, c)
			waitCause(t, b, c, tc.cause, 10*time.Second)
			time.Sleep(2 * time.Second)
			if tl.saw(pb.State_STATE_UNLOCKED, time.Time{}, time.Now()) {
				t.Fatal("another cluster's key unlocked the node")
			}
		})
	}
}

// TestAccessRefusalsAreConfirmedBeforeTheyLock: a network policy makes Key
// Protect answer 401 (an IPv6 client under an allowed-IP list, 403) on
// every node at once. Bursts shorter than the confirmation window leave
// the node serving; a refusal that persists locks after the window, with a
// reason that names the possible causes.
func TestAccessRefusalsAreConfirmedBeforeTheyLock(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	const window = 3 * time.Second
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, ConfirmWindow: window.String()})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	tl := watchTimeline(t, c)
	from := time.Now()
	bursts := []struct {
		name string
		on   func() error
		off  func() error
	}{
		{"private-only instance reached publicly (401)", func() error { return k.SetAllowedNetwork(true) }, func() error { return k.SetAllowedNetwork(false) }},
		{"allowed-IP list without this node (401)", func() error { return k.SetAllowedIPs([]string{"10.0.0.0/8"}) }, func() error { return k.SetAllowedIPs(nil) }},
		{"IPv6 client under an allowed-IP list (403)", func() error { return k.SetFaults(kpemu.Faults{Refusal: kpemu.RefuseIPv6Policy}) }, func() error { return k.SetFaults(kpemu.Faults{}) }},
		{"wrong region (401)", func() error { return k.SetFaults(kpemu.Faults{Refusal: kpemu.RefuseWrongRegion}) }, func() error { return k.SetFaults(kpemu.Faults{}) }},
	}
	for _, burst := range bursts {
		k.ResetStats()
		if err := burst.on(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(window - time.Second)
		refused := k.Stats()["key_metadata"].Status["401"] + k.Stats()["key_metadata"].Status["403"]
		if err := burst.off(); err != nil {
			t.Fatal(err)
		}
		b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
		if refused == 0 {
			t.Fatalf("%s: no request was refused: the burst did not reach byokd", burst.name)
		}
		t.Logf("%s for %v: %d refusals, the node kept serving", burst.name, window-time.Second, refused)
	}
	if tl.saw(pb.State_STATE_LOCKED, from, time.Now()) {
		t.Fatalf("a refusal shorter than the confirmation window locked the node\n%s", b.Logs())
	}
	if !tl.saw(pb.State_STATE_DEGRADED, from, time.Now()) {
		t.Fatal("the node never degraded: the refusals did not reach it")
	}
	if err := k.SetAllowedNetwork(true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st := waitCause(t, b, c, "access-refused", window+4*time.Second)
	took := time.Since(start)
	t.Logf("a persisting 401 locked %v after it began (confirmation window %v, poll interval 1s)", took.Round(time.Millisecond), window)
	if took < window {
		t.Fatalf("locked %v after the refusals began, before the %v window", took, window)
	}
	if !strings.Contains(st.GetReason(), "network policy") || !strings.Contains(st.GetReason(), "wrong region") {
		t.Fatalf("the reason does not name the causes: %q", st.GetReason())
	}
	if err := k.SetAllowedNetwork(false); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
}

// TestAnswersNotFromKeyProtectNeverLock: a proxy's 407, a load balancer's
// HTML 403 and 404 are not Key Protect's answers: the node degrades and
// waits for the offline grace, as for any outage.
func TestAnswersNotFromKeyProtectNeverLock(t *testing.T) {
	k, _, b, c := startUnlocked(t, testenv.Options{Provision: true, ConfirmWindow: "1s"})
	tl := watchTimeline(t, c)
	from := time.Now()
	for _, preset := range []string{kpemu.RefuseProxy407, kpemu.RefuseLB403, kpemu.RefuseLB404} {
		if err := k.SetFaults(kpemu.Faults{Refusal: preset}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		st, err := c.Status(ctx(t), &pb.StatusRequest{})
		if err != nil || st.GetState() != pb.State_STATE_DEGRADED || st.GetCause() != "foreign-answer" {
			t.Fatalf("%s: %v %v, want DEGRADED foreign-answer", preset, st, err)
		}
		if err := k.SetFaults(kpemu.Faults{}); err != nil {
			t.Fatal(err)
		}
		b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
	}
	if tl.saw(pb.State_STATE_LOCKED, from, time.Now()) {
		t.Fatalf("an answer that was not Key Protect's locked the node\n%s", b.Logs())
	}
}

// TestKeyProtectInternalErrorLocksOnlyWhenItPersists: 422 is Key Protect's
// internal HSM error, not a verdict on the wrapped key. A burst shorter
// than the window keeps the node serving; a persisting one locks.
func TestKeyProtectInternalErrorLocksOnlyWhenItPersists(t *testing.T) {
	k, _, b, c := startUnlocked(t, testenv.Options{Provision: true, Proof: "1s", ConfirmWindow: "3s"})
	tl := watchTimeline(t, c)
	from := time.Now()
	hsm := kpemu.Faults{Refusal: kpemu.RefuseHSM, Routes: []string{"action_unwrap"}}
	if err := k.SetFaults(hsm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := k.SetFaults(kpemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
	if tl.saw(pb.State_STATE_LOCKED, from, time.Now()) || !tl.saw(pb.State_STATE_DEGRADED, from, time.Now()) {
		t.Fatalf("a 2s burst of 422 on a 3s window: locked %v, degraded %v", tl.saw(pb.State_STATE_LOCKED, from, time.Now()),
			tl.saw(pb.State_STATE_DEGRADED, from, time.Now()))
	}
	if err := k.SetFaults(hsm); err != nil {
		t.Fatal(err)
	}
	waitCause(t, b, c, "kp-internal-error", 8*time.Second)
}

// TestAccessRefusalStandsWhenIAMFailsTheRefresh: after a 401 byokd asks IAM
// for a fresh token; when IAM answers 503, the 401 used to become a
// transient failure that waited out the offline grace (an hour). It stays
// an access refusal and locks after the confirmation window.
func TestAccessRefusalStandsWhenIAMFailsTheRefresh(t *testing.T) {
	k, _, b, c := startUnlocked(t, testenv.Options{Provision: true, ConfirmWindow: "2s"})
	k.SetAPIKey(testenv.APIKey, true, false)
	if err := k.SetFaults(kpemu.Faults{ErrorRate: 1, Routes: []string{"iam_token"}}); err != nil {
		t.Fatal(err)
	}
	waitCause(t, b, c, "access-refused", 8*time.Second)
	if n := k.Stats()["iam_token"].Status["503"]; n == 0 {
		t.Fatal("IAM was never asked for a fresh token")
	}
}

// TestDeletedKeyThatReadsDeactivatedLocks: some answers call a deleted key
// "Deactivated" (state 3) for a day; byokd read that as expired and kept
// serving. It reads deleted: true and locks.
func TestDeletedKeyThatReadsDeactivatedLocks(t *testing.T) {
	k, root, b, c := startUnlocked(t, testenv.Options{Provision: true})
	if err := k.SetFaults(kpemu.Faults{DeletedAsDeactivated: true}); err != nil {
		t.Fatal(err)
	}
	k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
		_, err := kc.DeleteKey(ctx, root, kp.ReturnMinimal)
		return err
	})
	k.Do(t, "read", func(ctx context.Context, kc *kp.Client) error {
		key, err := kc.GetKeyMetadata(ctx, root)
		if err == nil && (key.State != 3 || key.Deleted == nil || !*key.Deleted) {
			t.Fatalf("kpemu shows the deleted key as state %d, deleted %v", key.State, key.Deleted)
		}
		return err
	})
	waitCause(t, b, c, "key-deleted", 3*time.Second)
}

// TestRotationDuringAnUnwrapIsNotProvedForever: a rotation between the
// metadata read and the unwrap of a proof used to store the older version,
// and every later check then ran a proof unwrap. The version stored comes
// from the unwrap answer, and checks stop unwrapping.
func TestRotationDuringAnUnwrapIsNotProvedForever(t *testing.T) {
	k, root, b, c := startUnlocked(t, testenv.Options{Provision: true})
	// Unwraps take 2 s: the proof that the first rotation causes is still
	// in its unwrap when the second rotation lands.
	if err := k.SetFaults(kpemu.Faults{Latency: kpemu.Duration(2 * time.Second), Routes: []string{"action_unwrap"}}); err != nil {
		t.Fatal(err)
	}
	rotate := func() {
		k.Do(t, "rotate", func(ctx context.Context, kc *kp.Client) error { return kc.Rotate(ctx, root, "") })
	}
	rotate()
	time.Sleep(1500 * time.Millisecond)
	rotate()
	latest := latestVersion(t, k, root)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx(t), &pb.StatusRequest{})
		if err == nil && st.GetKeyVersion() == latest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key version %v, want %s\n%s", st, latest, b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := k.SetFaults(kpemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a proof in flight ends
	before := k.Stats()["action_unwrap"].Requests
	time.Sleep(5 * time.Second)
	if n := k.Stats()["action_unwrap"].Requests - before; n != 0 {
		t.Fatalf("%d unwraps in 5 s of checks after the rotations, want none before the next proof (1m)", n)
	}
	if v := storedVersion(t, b); v != latest {
		t.Fatalf("dek.json key_version %q, want %s", v, latest)
	}
}
