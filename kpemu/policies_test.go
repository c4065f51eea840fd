// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

const testAPIKey2 = "kpemu-test-api-key-second-4b2a"

func TestKeyPoliciesThroughTheClient(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := c.GetPolicies(ctx(t), root.ID); err != nil || len(ps) != 0 {
		t.Fatalf("a new key has no policies: %+v %v", ps, err)
	}
	if p, err := c.GetRotationPolicy(ctx(t), root.ID); err != nil || p != nil {
		t.Fatalf("no rotation policy: %+v %v", p, err)
	}
	status, _, body := e.raw("GET", "/api/v2/keys/"+root.ID+"/policies?policy=dualAuthDelete", nil)
	if status != 200 || bytes.Contains(body, []byte("resources")) || !bytes.Contains(body, []byte(`"collectionTotal":0`)) {
		t.Fatalf("no dual auth policy (manage-dual-auth.md's empty answer): %d %s", status, body)
	}

	e.srv.AdvanceClock(time.Minute)
	p, err := c.SetRotationPolicy(ctx(t), root.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Rotation == nil || p.Rotation.Interval != 3 || p.Rotation.Enabled == nil || !*p.Rotation.Enabled || p.CreatedAt == nil || p.UpdatedAt == nil ||
		!strings.Contains(p.CRN, ":policy:") || p.CreatedBy != apiKeyID(testAPIKey) {
		t.Fatalf("set rotation policy: %+v %+v", p, p.Rotation)
	}
	p, err = c.DisableRotationPolicy(ctx(t), root.ID)
	if err != nil || *p.Rotation.Enabled || p.Rotation.Interval != 3 {
		t.Fatalf("disable keeps the interval: %+v %v", p, err)
	}
	p, err = c.EnableRotationPolicy(ctx(t), root.ID)
	if err != nil || !*p.Rotation.Enabled || p.Rotation.Interval != 3 {
		t.Fatalf("enable: %+v %v", p, err)
	}
	p, err = c.GetRotationPolicy(ctx(t), root.ID)
	if err != nil || p == nil || p.Rotation.Interval != 3 || !*p.Rotation.Enabled {
		t.Fatalf("get rotation policy: %+v %v", p, err)
	}
	for _, months := range []int{0, 13, -2} {
		_, err = c.SetRotationPolicy(ctx(t), root.ID, months)
		kerr := wantKPError(t, err, 400, "INVALID_FIELD_ERR")
		if kerr.Reasons[0].Message != "The field `interval_month` must be: an integer between 1 and 12 (inclusive)" {
			t.Fatalf("interval %d: %q", months, kerr.Reasons[0].Message)
		}
	}
	if p, err = c.SetPolicy(ctx(t), root.ID, kp.ReturnRepresentation, 4); err != nil || p.Rotation.Interval != 4 {
		t.Fatalf("the older SetPolicy (no policy parameter): %+v %v", p, err)
	}
	p, err = c.SetDualAuthDeletePolicy(ctx(t), root.ID, true)
	if err != nil || p.DualAuth == nil || !*p.DualAuth.Enabled {
		t.Fatalf("set dual auth: %+v %v", p, err)
	}
	_, err = c.SetDualAuthDeletePolicy(ctx(t), root.ID, false)
	wantKPError(t, err, 400, "INVALID_FIELD_ERR") // manage-dual-auth.md: it cannot be reverted
	ps, err := c.GetPolicies(ctx(t), root.ID)
	if err != nil || len(ps) != 2 || ps[0].Rotation == nil || ps[1].DualAuth == nil {
		t.Fatalf("get policies: %+v %v", ps, err)
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.DualAuthDelete == nil || !*md.DualAuthDelete.Enabled || md.Rotation == nil || md.Rotation.Interval != 4 ||
		md.LastUpdateDate == nil || !md.LastUpdateDate.After(*md.CreationDate) {
		t.Fatalf("the key shows its policies and was updated: %+v %v", md, err)
	}

	other, err := c.CreateRootKey(ctx(t), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.EnableRotationPolicy(ctx(t), other.ID)
	wantKPError(t, err, 400, "INVALID_FIELD_ERR") // no interval to enable
	ps, err = c.SetPolicies(ctx(t), other.ID, true, 2, true, true)
	if err != nil || len(ps) != 2 || ps[0].Rotation.Interval != 2 || !*ps[1].DualAuth.Enabled {
		t.Fatalf("set both policies at once: %+v %v", ps, err)
	}

	std, err := c.CreateStandardKey(ctx(t), "std", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SetRotationPolicy(ctx(t), std.ID, 1)
	wantKPError(t, err, 400, "KEY_ROOT_REQ_ERR")
	if _, err := c.SetDualAuthDeletePolicy(ctx(t), std.ID, true); err != nil {
		t.Fatalf("dual auth on a standard key: %v", err)
	}
	imp, err := c.CreateImportedRootKey(ctx(t), "imp", nil, base64.StdEncoding.EncodeToString(make([]byte, 32)), "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SetRotationPolicy(ctx(t), imp.ID, 1)
	wantKPError(t, err, 400, "INVALID_FIELD_ERR") // key-rotation.md: none for imported keys

	status, _, body = e.raw("GET", "/api/v2/keys/"+root.ID+"/policies?policy=everything", nil)
	wantShape(t, status, body, 400, "INVALID_QUERY_PARAM_ERR")
	status, _, body = e.raw("PUT", "/api/v2/keys/"+root.ID+"/policies?policy=rotation",
		[]byte(`{"metadata":{"collectionType":"`+typePolicy+`","collectionTotal":1},"resources":[{"dualAuthDelete":{"enabled":true}}]}`))
	wantShape(t, status, body, 400, "BODY_QUERY_PARAM_MISMATCH_ERR")
	status, _, body = e.raw("PUT", "/api/v2/keys/"+root.ID+"/policies",
		[]byte(`{"metadata":{"collectionType":"`+typePolicy+`","collectionTotal":2},"resources":[{"rotation":{"interval_month":2}}]}`))
	wantShape(t, status, body, 400, "COLLECTION_TOTAL_MISMATCH_ERR")
	status, _, body = e.raw("PUT", "/api/v2/keys/"+root.ID+"/policies", nil)
	wantShape(t, status, body, 400, "NO_BODY_ERR")
}

// listVersions counts a key's versions through the client.
func listVersions(t *testing.T, c *kp.Client, id string) int {
	t.Helper()
	vs, err := c.ListKeyVersions(ctx(t), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(vs.KeyVersion)
}

func TestRotationPolicyRotatesOnSchedule(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MonthLength = time.Hour })
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	aad := []string{"a"}
	ct, err := c.Wrap(ctx(t), root.ID, nil, &aad)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(30 * time.Minute)
	if _, err := c.SetRotationPolicy(ctx(t), root.ID, 2); err != nil {
		t.Fatal(err)
	}
	// Two "months" of one hour from the policy's setting, which is later
	// than the key's creation.
	e.srv.AdvanceClock(119 * time.Minute)
	if n := listVersions(t, c, root.ID); n != 1 {
		t.Fatalf("%d versions before the policy is due", n)
	}
	e.srv.AdvanceClock(2 * time.Minute)
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.LastRotateDate == nil || md.LastUpdateDate == nil || md.KeyVersion.ID == root.KeyVersion.ID {
		t.Fatalf("after the policy's interval: %+v %v", md, err)
	}
	if n := listVersions(t, c, root.ID); n != 2 {
		t.Fatalf("%d versions after one interval", n)
	}
	if _, rewrapped, err := c.UnwrapV2(ctx(t), root.ID, ct, &aad); err != nil || len(rewrapped) == 0 {
		t.Fatalf("a ciphertext of the old version unwraps and is rewrapped: %v", err)
	}
	// A policy rotation notifies registered services, as a rotate does.
	wantKPError(t, c.SyncAssociatedResources(ctx(t), root.ID), 409, "REQ_TOO_EARLY_ERR")

	// Many missed intervals make one rotation, not a burst.
	e.srv.AdvanceClock(10 * 2 * time.Hour)
	if n := listVersions(t, c, root.ID); n != 3 {
		t.Fatalf("%d versions after many intervals, want 3", n)
	}
	// A disabled policy rotates nothing; neither does one on a disabled key.
	if _, err := c.DisableRotationPolicy(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(5 * time.Hour)
	if n := listVersions(t, c, root.ID); n != 3 {
		t.Fatalf("%d versions with the policy disabled", n)
	}
	if _, err := c.EnableRotationPolicy(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DisableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(5 * time.Hour)
	if n := listVersions(t, c, root.ID); n != 3 {
		t.Fatalf("%d versions of a suspended key", n)
	}
}

func TestRotationPolicyIsNotHeldToTheRotateCooldown(t *testing.T) {
	// A month of 10 minutes, a manual rotation cooldown of 1 hour.
	e := newEnv(t, func(c *Config) { c.MonthLength = 10 * time.Minute })
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetRotationPolicy(ctx(t), root.ID, 1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.srv.AdvanceClock(10 * time.Minute)
		if n := listVersions(t, c, root.ID); n != i+2 {
			t.Fatalf("after %d intervals: %d versions", i+1, n)
		}
	}
	// A manual rotation still waits an hour after the last one.
	wantKPError(t, c.Rotate(ctx(t), root.ID, ""), 409, "KEY_ROTATION_NOT_PERMITTED")
}

// TestRotationPolicyTicksWithoutRequests runs a real listener: the policy
// rotates the key with no request at all, and Close stops the ticker.
func TestRotationPolicyTicksWithoutRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kpemu.json")
	cfg := Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}, StatePath: path, MonthLength: 200 * time.Millisecond}
	in, err := Listen(cfg, "127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: in.Server, url: in.URL}
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetRotationPolicy(ctx(t), root.ID, 1); err != nil {
		t.Fatal(err)
	}
	versions := func() int {
		in.mu.RLock()
		defer in.mu.RUnlock()
		return len(in.keys[root.ID].Versions)
	}
	deadline := time.Now().Add(5 * time.Second)
	for versions() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation without requests: %d versions", versions())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.ticked:
	default:
		t.Fatal("the ticker still runs after Close")
	}
	n := versions()
	time.Sleep(500 * time.Millisecond)
	if versions() != n {
		t.Fatal("rotations after Close")
	}

	// The policy and the rotations survive a restart.
	second, err := Listen(cfg, "127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(context.Background())
	c2 := (&env{t: t, srv: second.Server, url: second.URL}).client()
	p, err := c2.GetRotationPolicy(ctx(t), root.ID)
	if err != nil || p == nil || p.Rotation.Interval != 1 || !*p.Rotation.Enabled {
		t.Fatalf("policy after restart: %+v %v", p, err)
	}
	if got := listVersions(t, c2, root.ID); got < n {
		t.Fatalf("%d versions after restart, had %d", got, n)
	}
}

func TestDualAuthorizationDelete(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.APIKeys = append(c.APIKeys, testAPIKey2) })
	alice := e.client()
	bob := e.client(func(cc *kp.ClientConfig) { cc.APIKey = testAPIKey2 })
	root, err := alice.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Without the policy the actions are refused as before.
	wantKPError(t, alice.InitiateDualAuthDelete(ctx(t), root.ID), 409, "NOT_DUAL_AUTH_ERR")
	wantKPError(t, alice.CancelDualAuthDelete(ctx(t), root.ID), 409, "NOT_DUAL_AUTH_ERR")

	if _, err := alice.SetDualAuthDeletePolicy(ctx(t), root.ID, true); err != nil {
		t.Fatal(err)
	}
	_, err = bob.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	kerr := wantKPError(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	if kerr.Reasons[0].Message != "Number of authorizations required to delete is not met" ||
		!strings.HasPrefix(kerr.Message, "Conflict: 1 prior authorization(s) are required for deletion") {
		t.Fatalf("no prior authorization: %+v", kerr)
	}
	if err := alice.InitiateDualAuthDelete(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	status, _, body := e.raw("GET", "/api/v2/keys/"+root.ID+"/metadata", nil)
	if status != 200 || !bytes.Contains(body, []byte(`"dualAuthDelete":{"enabled":true,"keySetForDeletion":true,"authExpiration":`)) {
		t.Fatalf("metadata of a key set for deletion: %s", body)
	}
	_, err = alice.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "AUTHORIZATIONS_NOT_MET") // the same identity twice
	if err := alice.CancelDualAuthDelete(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "AUTHORIZATIONS_NOT_MET") // cancelled
	if err := alice.InitiateDualAuthDelete(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(7*24*time.Hour + time.Minute)
	_, err = bob.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "AUTHORIZATIONS_NOT_MET") // the authorization lasted 7 days
	if err := alice.InitiateDualAuthDelete(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal); err != nil {
		t.Fatalf("the second identity deletes: %v", err)
	}

	// A suspended key cannot be set for deletion (error-messages.md).
	susp, err := alice.CreateRootKey(ctx(t), "suspended", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SetDualAuthDeletePolicy(ctx(t), susp.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := alice.DisableKey(ctx(t), susp.ID); err != nil {
		t.Fatal(err)
	}
	wantKPError(t, alice.InitiateDualAuthDelete(ctx(t), susp.ID), 409, "KEY_ACTION_INVALID_STATE_ERR")

	// The instance policy applies to keys created after it.
	before, err := alice.CreateRootKey(ctx(t), "before", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetDualAuthInstancePolicy(ctx(t), true); err != nil {
		t.Fatal(err)
	}
	ip, err := alice.GetDualAuthInstancePolicy(ctx(t))
	if err != nil || ip == nil || ip.PolicyType != policyDualAuth || !*ip.PolicyData.Enabled {
		t.Fatalf("instance dual auth policy: %+v %v", ip, err)
	}
	after, err := alice.CreateRootKey(ctx(t), "after", nil)
	if err != nil {
		t.Fatal(err)
	}
	if after.DualAuthDelete == nil || !*after.DualAuthDelete.Enabled {
		t.Fatalf("a key created under the instance policy: %+v", after.DualAuthDelete)
	}
	if p, err := alice.GetDualAuthDeletePolicy(ctx(t), after.ID); err != nil || p == nil || !*p.DualAuth.Enabled {
		t.Fatalf("its key policy: %+v %v", p, err)
	}
	_, err = alice.DeleteKey(ctx(t), after.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	if _, err := alice.DeleteKey(ctx(t), before.ID, kp.ReturnMinimal); err != nil {
		t.Fatalf("a key created before the instance policy: %v", err)
	}
	if err := alice.SetDualAuthInstancePolicy(ctx(t), false); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DeleteKey(ctx(t), after.ID, kp.ReturnMinimal); err == nil {
		t.Fatal("disabling the instance policy changed an existing key's")
	}
}
