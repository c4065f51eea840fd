// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

func expiringRoot(t *testing.T, k *testenv.KP) string {
	t.Helper()
	var id string
	k.Do(t, "create expiring root key", func(ctx context.Context, c *kp.Client) error {
		exp := time.Now().Add(time.Hour)
		key, err := c.CreateRootKey(ctx, "expiring-root", &exp)
		if key != nil {
			id = key.ID
		}
		return err
	})
	return id
}

// TestExpiredRootKeyWarnsButStaysUnlocked: an expired (deactivated) root key
// still unwraps in Key Protect; byokd keeps serving and says rotation and
// re-provisioning are impossible, in its status, logs and metrics.
func TestExpiredRootKeyWarnsButStaysUnlocked(t *testing.T) {
	k := testenv.StartKP(t)
	root := expiringRoot(t, k)
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	key := dataKey(t, c, "t")
	k.AdvanceClock(2 * time.Hour)
	deadline := time.Now().Add(3 * time.Second)
	for {
		s, err := c.Status(ctx(t), &pb.StatusRequest{})
		if err == nil && len(s.GetWarnings()) == 1 && strings.Contains(s.GetWarnings()[0], "expired") {
			if s.GetState() != pb.State_STATE_UNLOCKED {
				t.Fatalf("an expired root key locked the node: %v", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no expiry warning: %v %v\n%s", s, err, b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := dataKey(t, c, "t"); string(got) != string(key) {
		t.Fatal("data key changed")
	}
	out, _, _ := b.Ctl(t, nil, "status")
	if !strings.Contains(out, "WARNING") || !strings.Contains(out, "rotation and re-provisioning are impossible") {
		t.Fatalf("status shows no warning:\n%s", out)
	}
	_, metrics := get(t, "http://"+opsAddr(t, b)+"/metrics")
	if !strings.Contains(metrics, "byokd_root_key_expired 1") {
		t.Fatal("byokd_root_key_expired is not 1")
	}
	if !strings.Contains(b.Logs(), "root key expired") {
		t.Fatal("no log line about the expired root key")
	}
}

func TestExpiredRootKeyLocksWithLockOnExpired(t *testing.T) {
	k := testenv.StartKP(t)
	root := expiringRoot(t, k)
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, LockOnExpired: true})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	k.AdvanceClock(2 * time.Hour)
	st := b.WaitState(t, c, pb.State_STATE_LOCKED, 3*time.Second)
	if st.GetReason() != "root key expired" {
		t.Fatalf("reason %q", st.GetReason())
	}
}
