// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	"github.com/byokd/byokd/kpemu"
)

func newClient(t *testing.T, k *testenv.KP, rootKeyID string, mutate ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		URL: k.URL, TokenURL: k.TokenURL(), InstanceID: testenv.InstanceID,
		RootKeyID: rootKeyID, APIKey: testenv.APIKey, Timeout: 5 * time.Second, CAFile: k.CAFile,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var aad = []string{"byokd", "cluster:test"}

func TestWrapNewThenUnwrapReturnsTheSameDEK(t *testing.T) {
	for _, k := range []*testenv.KP{testenv.StartKP(t), testenv.StartKPTLS(t)} {
		t.Run(strings.SplitN(k.URL, ":", 2)[0], func(t *testing.T) {
			root := k.RootKey(t, "root")
			c := newClient(t, k, root)
			w, err := c.WrapNew(tctx(t), aad)
			if err != nil {
				t.Fatal(err)
			}
			defer w.DEK.Destroy()
			if w.DEK.Len() != DEKSize || w.Ciphertext == "" || w.KeyVersion == "" {
				t.Fatalf("wrap: %d bytes, ct %d, version %q", w.DEK.Len(), len(w.Ciphertext), w.KeyVersion)
			}
			u, err := c.Unwrap(tctx(t), w.Ciphertext, aad)
			if err != nil {
				t.Fatal(err)
			}
			defer u.DEK.Destroy()
			if !bytes.Equal(u.DEK.Bytes(), w.DEK.Bytes()) || u.Rewrapped != "" {
				t.Fatalf("unwrap gave another DEK or a rewrap: re=%q", u.Rewrapped)
			}
			if u.KeyVersion != w.KeyVersion || u.StoredVersion() != w.KeyVersion {
				t.Fatalf("unwrap answered version %q, stored %q; wrap said %q", u.KeyVersion, u.StoredVersion(), w.KeyVersion)
			}
			info, err := c.Metadata(tctx(t))
			if err != nil || info.State != StateActive || info.Version != w.KeyVersion || CheckUsable(info) != nil {
				t.Fatalf("metadata: %+v %v", info, err)
			}
		})
	}
}

func TestRotationHandsBackRewrappedDEKWithItsVersion(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	c := newClient(t, k, root)
	w, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	defer w.DEK.Destroy()
	k.Do(t, "rotate", func(ctx context.Context, kc *kp.Client) error { return kc.Rotate(ctx, root, "") })
	info, err := c.Metadata(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.Unwrap(tctx(t), w.Ciphertext, aad)
	if err != nil {
		t.Fatal(err)
	}
	defer u.DEK.Destroy()
	if !bytes.Equal(u.DEK.Bytes(), w.DEK.Bytes()) || u.Rewrapped == "" || u.Rewrapped == w.Ciphertext {
		t.Fatalf("unwrap after rotation: same=%v re=%d", bytes.Equal(u.DEK.Bytes(), w.DEK.Bytes()), len(u.Rewrapped))
	}
	if u.KeyVersion != w.KeyVersion || u.RewrappedVersion != info.Version || u.StoredVersion() != info.Version {
		t.Fatalf("versions: used %q (want %q), rewrapped %q, stored %q (want %q)", u.KeyVersion, w.KeyVersion, u.RewrappedVersion, u.StoredVersion(), info.Version)
	}
	u2, err := c.Unwrap(tctx(t), u.Rewrapped, aad)
	if err != nil || !bytes.Equal(u2.DEK.Bytes(), w.DEK.Bytes()) || u2.Rewrapped != "" || u2.StoredVersion() != info.Version {
		t.Fatalf("unwrap of the rewrapped DEK: %v", err)
	}
	u2.DEK.Destroy()
}

// TestClassifyAgainstKeyProtect drives each row of the table, and each
// other rule of Classify, through the emulator and the client, and checks
// the lock decision.
func TestClassifyAgainstKeyProtect(t *testing.T) {
	k := testenv.StartKP(t)
	refusal := func(preset string, routes ...string) func(t *testing.T) (*Client, string) {
		return faulted(k, kpemu.Faults{Refusal: preset, Routes: routes})
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) (c *Client, ct string)
		op    string // "unwrap", "unwrap-other-aad", "wrap" or "metadata"
		class Class
		cause string
	}{
		{"disabled root key, unwrap (409 KEY_ACTION_INVALID_STATE_ERR)", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
			return c, ct
		}, "unwrap", KeyState, "key-disabled"},
		{"disabled root key, metadata (state 2)", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
			return c, ct
		}, "metadata", KeyState, "key-disabled"},
		{"deleted root key, unwrap (410)", deleted(k, false), "unwrap", KeyState, "key-deleted"},
		{"deleted root key, metadata (state 5)", deleted(k, false), "metadata", KeyState, "key-deleted"},
		{"deleted root key reading deactivated, metadata (deleted: true)", deleted(k, true), "metadata", KeyState, "key-deleted"},
		{"unknown root key (404 KEY_NOT_FOUND_ERR)", func(t *testing.T) (*Client, string) {
			return newClient(t, k, "0e0e0e0e-0000-4000-8000-000000000000"), "x"
		}, "metadata", KeyState, "key-not-found"},
		{"wrong AAD, another cluster (400 INVALID_FIELD_ERR)", func(t *testing.T) (*Client, string) {
			_, c, ct := provisioned(t, k)
			return c, ct
		}, "unwrap-other-aad", Refused, "wrapped-key-refused"},
		{"another root key's ciphertext (400 INVALID_FIELD_ERR)", func(t *testing.T) (*Client, string) {
			_, _, ct := provisioned(t, k)
			root2 := k.RootKey(t, "other-root")
			return newClient(t, k, root2), ct
		}, "unwrap", Refused, "wrapped-key-refused"},
		{"standard key configured as root key (400 KEY_ROOT_REQ_ERR)", func(t *testing.T) (*Client, string) {
			var id string
			k.Do(t, "create standard", func(ctx context.Context, kc *kp.Client) error {
				key, err := kc.CreateStandardKey(ctx, "std", nil)
				if key != nil {
					id = key.ID
				}
				return err
			})
			return newClient(t, k, id), "eA=="
		}, "unwrap", KeyState, "key-not-root"},
		{"API key unknown to IAM (BXNIM0415E)", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			return newClient(t, k, root, func(c *Config) { c.APIKey = "wrong-key" }), "x"
		}, "metadata", Access, "iam-refused"},
		{"access removed (401)", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			k.SetAPIKey("revoked-key", true, false)
			return newClient(t, k, root, func(c *Config) { c.APIKey = "revoked-key" }), "x"
		}, "metadata", Access, "access-refused"},
		{"wrong instance (401)", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			return newClient(t, k, root, func(c *Config) { c.InstanceID = "0b6e1f3a-1111-4222-8333-444455556666" }), "x"
		}, "metadata", Access, "access-refused"},
		{"network policy (401), metadata", refusal("network-policy"), "metadata", Access, "access-refused"},
		{"network policy (401), unwrap", refusal("network-policy"), "unwrap", Access, "access-refused"},
		{"wrong region (401)", refusal("wrong-region"), "metadata", Access, "access-refused"},
		{"IPv6 under an allowed-IP policy (403 FEATURE_RESTRICTED_ERR)", refusal("ipv6-policy"), "unwrap", Access, "access-refused"},
		{"HSM internal error (422)", refusal("hsm", "action_unwrap"), "unwrap", Internal, "kp-internal-error"},
		{"HSM internal error on create (422)", refusal("hsm", "action_wrap"), "wrap", Internal, "kp-internal-error"},
		{"proxy 407, not Key Protect", refusal("proxy-407"), "metadata", Transient, "foreign-answer"},
		{"load balancer 403, not Key Protect", refusal("lb-403"), "unwrap", Transient, "foreign-answer"},
		{"load balancer 404, not Key Protect", refusal("lb-404"), "metadata", Transient, "foreign-answer"},
		{"503", faulted(k, kpemu.Faults{ErrorRate: 1, Routes: []string{"key_metadata"}}), "metadata", Transient, "unavailable"},
		{"500 on unwrap", faulted(k, kpemu.Faults{ErrorRate: 1, ErrorStatus: 500, Routes: []string{"action_unwrap"}}), "unwrap", Transient, "unavailable"},
		{"429", faulted(k, kpemu.Faults{ThrottleRate: 1, RetryAfter: kpemu.Duration(7 * time.Second), Routes: []string{"key_metadata"}}), "metadata", Transient, "rate-limited"},
		{"429 on unwrap", faulted(k, kpemu.Faults{ThrottleRate: 1, RetryAfter: kpemu.Duration(7 * time.Second), Routes: []string{"action_unwrap"}}), "unwrap", Transient, "rate-limited"},
		{"connection reset", faulted(k, kpemu.Faults{ResetRate: 1, Routes: []string{"key_metadata"}}), "metadata", Transient, "unreachable"},
		{"connection reset on unwrap", faulted(k, kpemu.Faults{ResetRate: 1, Routes: []string{"action_unwrap"}}), "unwrap", Transient, "unreachable"},
		{"outage", faulted(k, kpemu.Faults{Outage: true}), "metadata", Transient, "unreachable"},
		{"IAM unavailable", faulted(k, kpemu.Faults{ErrorRate: 1, Routes: []string{"iam_token"}}), "metadata", Transient, "iam-unavailable"},
		{"timeout", func(t *testing.T) (*Client, string) {
			root, _, ct := provisioned(t, k)
			c := newClient(t, k, root, func(c *Config) { c.Timeout = 200 * time.Millisecond })
			setFaults(t, k, kpemu.Faults{Latency: kpemu.Duration(time.Second), Routes: []string{"action_unwrap"}})
			return c, ct
		}, "unwrap", Transient, "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, ct := tc.setup(t)
			var err error
			switch tc.op {
			case "unwrap":
				var u *Unwrapped
				if u, err = c.Unwrap(tctx(t), ct, aad); err == nil {
					u.DEK.Destroy()
				}
			case "unwrap-other-aad":
				_, err = c.Unwrap(tctx(t), ct, []string{"byokd", "cluster:other"})
			case "wrap":
				_, err = c.WrapNew(tctx(t), aad)
			case "metadata":
				var info *KeyInfo
				info, err = c.Metadata(tctx(t))
				if err == nil {
					err = CheckUsable(info)
				}
			}
			v := Classify(err)
			if v.Class != tc.class || v.Cause != tc.cause || v.Reason == "" {
				t.Fatalf("Classify(%v) = %v %q %q, want %v %q", err, v.Class, v.Cause, v.Reason, tc.class, tc.cause)
			}
			if strings.Contains(fmt.Sprint(err), testenv.APIKey) {
				t.Fatal("the error names the API key")
			}
			if strings.Contains(tc.name, "429") && v.RetryAfter != 7*time.Second {
				t.Fatalf("Retry-After %v, want 7s", v.RetryAfter)
			}
		})
	}
}

// TestClassifyAnswersByokdDoesNotProvoke: two rows byokd's own calls do
// not bring about against kpemu — 409 REQ_TOO_EARLY_ERR and 400
// KEY_EXPIRED_ERR — classified from the emulator's real answers, got
// through the real client by acting as the customer.
func TestClassifyAnswersByokdDoesNotProvoke(t *testing.T) {
	k := testenv.StartKP(t, func(c *kpemu.Config) { c.ActionCooldown = 30 * time.Second })
	classify := func(t *testing.T, err error) Verdict {
		t.Helper()
		var kerr *kp.Error
		if !errors.As(err, &kerr) {
			t.Fatalf("no Key Protect error: %v", err)
		}
		return Classify(newAPIError("metadata", kerr.StatusCode, http.Header{}, kerr.BodyContent, time.Now()))
	}
	root := k.RootKey(t, "early")
	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	err := k.Client().EnableKey(tctx(t), root)
	if v := classify(t, err); v.Class != Transient || v.Cause != "too-early" {
		t.Fatalf("enable within the cooldown: %v → %v %q", err, v.Class, v.Cause)
	}
	var expiring string
	k.Do(t, "create an expiring key", func(ctx context.Context, kc *kp.Client) error {
		exp := time.Now().Add(time.Hour)
		key, err := kc.CreateRootKey(ctx, "expiring", &exp)
		if key != nil {
			expiring = key.ID
		}
		return err
	})
	k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
		_, err := kc.DeleteKey(ctx, expiring, kp.ReturnMinimal)
		return err
	})
	k.AdvanceClock(2 * time.Hour)
	_, err = k.Client().RestoreKey(tctx(t), expiring)
	if v := classify(t, err); v.Class != KeyState || v.Cause != "key-expired" {
		t.Fatalf("restore of an expired key: %v → %v %q", err, v.Class, v.Cause)
	}
}

// TestAccessRefusalStandsWhenNoFreshTokenCanBeHad: a 401 is retried with a
// fresh token; when IAM cannot give one, the answer is still Key Protect's
// 401, never a transient failure.
func TestAccessRefusalStandsWhenNoFreshTokenCanBeHad(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	k.SetAPIKey("soon-revoked", false, false)
	c := newClient(t, k, root, func(c *Config) { c.APIKey = "soon-revoked" })
	if _, err := c.Metadata(tctx(t)); err != nil {
		t.Fatal(err)
	}
	k.SetAPIKey("soon-revoked", true, false)
	setFaults(t, k, kpemu.Faults{ErrorRate: 1, Routes: []string{"iam_token"}})
	_, err := c.Metadata(tctx(t))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Refresh == nil {
		t.Fatalf("got %v, want the 401 with the failed refresh noted", err)
	}
	if v := Classify(err); v.Class != Access {
		t.Fatalf("Classify = %v %q, want access", v.Class, v.Reason)
	}
	if n := k.Stats()["iam_token"].Requests; n < 2 {
		t.Fatalf("IAM asked %d times, want the first token and a refresh", n)
	}
}

// TestClassifyTable checks every row of the table, and the rules around it,
// on answers built by hand: the same answer with a body that is not Key
// Protect's is transient.
func TestClassifyTable(t *testing.T) {
	for _, r := range table {
		ae := &APIError{Op: r.op, Status: r.status, Code: r.code, Target: r.target, KeyProtect: true}
		if ae.Op == "" {
			ae.Op = "metadata"
		}
		if ae.Code == "" {
			ae.Code = "SOME_CODE"
		}
		if v := Classify(ae); v.Class != r.class || v.Cause != r.cause || v.Reason != r.reason {
			t.Errorf("row %d %s: Classify = %v %q, want %v %q", r.status, r.code, v.Class, v.Cause, r.class, r.cause)
		}
		foreign := *ae
		foreign.KeyProtect = false
		want := Transient
		if v := Classify(&foreign); v.Class != want {
			t.Errorf("row %d %s without Key Protect's body: %v, want transient", r.status, r.code, v.Class)
		}
	}
	for _, tc := range []struct {
		err   error
		class Class
		cause string
	}{
		{nil, OK, "ok"},
		{context.DeadlineExceeded, Transient, "timeout"},
		{errors.New("something odd"), Transient, "unexpected"},
		{&APIError{Op: "metadata", Status: 418, KeyProtect: true}, KeyState, "refused-4xx"},
		{&APIError{Op: "metadata", Status: 418}, Transient, "foreign-answer"},
		{&APIError{Op: "unwrap", Status: 400, Code: "INVALID_FIELD_ERR", Target: "ciphertext", KeyProtect: true}, Refused, "wrapped-key-refused"},
		{&APIError{Op: "unwrap", Status: 400, Code: "INVALID_FIELD_ERR", Target: "aad", KeyProtect: true}, KeyState, "refused-4xx"},
		{&APIError{Op: "metadata", Status: 400, Code: "INVALID_FIELD_ERR", KeyProtect: true}, KeyState, "refused-4xx"},
		{&APIError{Op: "metadata", Status: 404, Code: "NOT_FOUND_ERR", KeyProtect: true}, KeyState, "refused-4xx"},
		{&APIError{Op: "metadata", Status: 404}, Transient, "foreign-answer"},
		{&APIError{Op: "metadata", Status: 502}, Transient, "unavailable"},
		{&APIError{Op: "metadata", Status: 429}, Transient, "rate-limited"},
		{&APIError{Op: "metadata", Status: 401, KeyProtect: true, Refresh: errors.New("iam down")}, Access, "access-refused"},
		{&StateError{KeyID: "k", State: StateSuspended}, KeyState, "key-disabled"},
		{&StateError{KeyID: "k", State: StateDeactivated, Deleted: true}, KeyState, "key-deleted"},
		{&IAMError{Status: 503, Code: "x"}, Transient, "iam-unavailable"},
		{&IAMError{Status: 400, Code: "BXNIM0415E", JSON: true}, Access, "iam-refused"},
		{&IAMError{Status: 403, Code: "unknown"}, Transient, "foreign-answer"},
	} {
		if v := Classify(tc.err); v.Class != tc.class || v.Cause != tc.cause {
			t.Errorf("Classify(%v) = %v %q, want %v %q", tc.err, v.Class, v.Cause, tc.class, tc.cause)
		}
	}
	if d := parseRetryAfter("12", time.Now()); d != 12*time.Second {
		t.Fatalf("Retry-After seconds: %v", d)
	}
	now := time.Now()
	if d := parseRetryAfter(now.Add(90*time.Second).UTC().Format(http.TimeFormat), now); d < 80*time.Second || d > 91*time.Second {
		t.Fatalf("Retry-After date: %v", d)
	}
}

func provisioned(t *testing.T, k *testenv.KP) (root string, c *Client, ct string) {
	t.Helper()
	root = k.RootKey(t, "root")
	c = newClient(t, k, root)
	w, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	w.DEK.Destroy()
	return root, c, w.Ciphertext
}

func deleted(k *testenv.KP, asDeactivated bool) func(t *testing.T) (*Client, string) {
	return func(t *testing.T) (*Client, string) {
		root, c, ct := provisioned(t, k)
		k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
			_, err := kc.DeleteKey(ctx, root, kp.ReturnMinimal)
			return err
		})
		if asDeactivated {
			setFaults(t, k, kpemu.Faults{DeletedAsDeactivated: true})
		}
		return c, ct
	}
}

func setFaults(t *testing.T, k *testenv.KP, f kpemu.Faults) {
	t.Helper()
	if err := k.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.SetFaults(kpemu.Faults{}) })
}

func faulted(k *testenv.KP, f kpemu.Faults) func(t *testing.T) (*Client, string) {
	return func(t *testing.T) (*Client, string) {
		_, c, ct := provisioned(t, k)
		c.tokens.tok = "" // make the IAM call happen under the fault too
		setFaults(t, k, f)
		return c, ct
	}
}
