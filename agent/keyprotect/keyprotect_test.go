package keyprotect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		RootKeyID: rootKeyID, APIKey: testenv.APIKey, Timeout: 5 * time.Second,
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
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	c := newClient(t, k, root)
	dek, ct, version, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(dek) != 32 || ct == "" || version == "" {
		t.Fatalf("wrap: %d bytes, ct %d, version %q", len(dek), len(ct), version)
	}
	got, re, err := c.Unwrap(tctx(t), ct, aad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, dek) || re != "" {
		t.Fatalf("unwrap gave another DEK or a rewrap: re=%q", re)
	}
	info, err := c.Metadata(tctx(t))
	if err != nil || info.State != StateActive || info.Version != version || CheckUsable(info) != nil {
		t.Fatalf("metadata: %+v %v", info, err)
	}
}

func TestRotationHandsBackRewrappedDEK(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "root")
	c := newClient(t, k, root)
	dek, ct, _, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	k.Do(t, "rotate", func(ctx context.Context, kc *kp.Client) error { return kc.Rotate(ctx, root, "") })
	got, re, err := c.Unwrap(tctx(t), ct, aad)
	if err != nil || !bytes.Equal(got, dek) || re == "" || re == ct {
		t.Fatalf("unwrap after rotation: same=%v re=%d err=%v", bytes.Equal(got, dek), len(re), err)
	}
	got2, re2, err := c.Unwrap(tctx(t), re, aad)
	if err != nil || !bytes.Equal(got2, dek) || re2 != "" {
		t.Fatalf("unwrap of the rewrapped DEK: %v", err)
	}
}

// TestClassifyAgainstKeyProtect drives each answer of the table through the
// emulator and the real client, and checks the lock decision.
func TestClassifyAgainstKeyProtect(t *testing.T) {
	k := testenv.StartKP(t)
	tests := []struct {
		name   string
		setup  func(t *testing.T) (c *Client, ct string)
		op     string // "unwrap" or "metadata"
		class  Class
		reason string
	}{
		{"disabled root key, unwrap", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
			return c, ct
		}, "unwrap", Authoritative, "root key not active (disabled)"},
		{"disabled root key, metadata", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
			return c, ct
		}, "metadata", Authoritative, "root key disabled"},
		{"deleted root key, unwrap", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
				_, err := kc.DeleteKey(ctx, root, kp.ReturnMinimal)
				return err
			})
			return c, ct
		}, "unwrap", Authoritative, "root key deleted"},
		{"deleted root key, metadata", func(t *testing.T) (*Client, string) {
			root, c, ct := provisioned(t, k)
			k.Do(t, "delete", func(ctx context.Context, kc *kp.Client) error {
				_, err := kc.DeleteKey(ctx, root, kp.ReturnMinimal)
				return err
			})
			return c, ct
		}, "metadata", Authoritative, "root key deleted"},
		{"unknown root key", func(t *testing.T) (*Client, string) {
			return newClient(t, k, "0e0e0e0e-0000-4000-8000-000000000000"), "x"
		}, "metadata", Authoritative, "root key not found"},
		{"wrong AAD (another cluster)", func(t *testing.T) (*Client, string) {
			_, c, ct := provisioned(t, k)
			return c, ct
		}, "unwrap-other-aad", Authoritative, "wrapped key refused by the root key (wrong key, AAD or corrupt)"},
		{"standard key configured as root key", func(t *testing.T) (*Client, string) {
			var id string
			k.Do(t, "create standard", func(ctx context.Context, kc *kp.Client) error {
				key, err := kc.CreateStandardKey(ctx, "std", nil)
				if key != nil {
					id = key.ID
				}
				return err
			})
			return newClient(t, k, id), "eA=="
		}, "unwrap", Authoritative, "configured root key is a standard key"},
		{"API key unknown to IAM", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			return newClient(t, k, root, func(c *Config) { c.APIKey = "wrong-key" }), "x"
		}, "metadata", Authoritative, "API key rejected by IAM (BXNIM0415E)"},
		{"access removed", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			k.SetAPIKey("revoked-key", true, false)
			return newClient(t, k, root, func(c *Config) { c.APIKey = "revoked-key" }), "x"
		}, "metadata", Authoritative, "access to Key Protect removed (401)"},
		{"wrong instance", func(t *testing.T) (*Client, string) {
			root := k.RootKey(t, "rk")
			return newClient(t, k, root, func(c *Config) { c.InstanceID = "0b6e1f3a-1111-4222-8333-444455556666" }), "x"
		}, "metadata", Authoritative, "access to Key Protect removed (401)"},
		{"503", faulted(k, kpemu.Faults{ErrorRate: 1, Routes: []string{"key_metadata"}}), "metadata", Transient, "Key Protect unavailable (503)"},
		{"500", faulted(k, kpemu.Faults{ErrorRate: 1, ErrorStatus: 500, Routes: []string{"key_metadata"}}), "metadata", Transient, "Key Protect unavailable (500)"},
		{"429", faulted(k, kpemu.Faults{ThrottleRate: 1, RetryAfter: kpemu.Duration(7 * time.Second), Routes: []string{"key_metadata"}}), "metadata", Transient, "Key Protect rate limit (429)"},
		{"connection reset", faulted(k, kpemu.Faults{ResetRate: 1, Routes: []string{"key_metadata"}}), "metadata", Transient, "Key Protect unreachable"},
		{"outage", faulted(k, kpemu.Faults{Outage: true}), "metadata", Transient, "Key Protect unreachable"},
		{"IAM unavailable", faulted(k, kpemu.Faults{ErrorRate: 1, Routes: []string{"iam_token"}}), "metadata", Transient, "Key Protect unavailable (503)"},
		{"timeout", func(t *testing.T) (*Client, string) {
			root, _, ct := provisioned(t, k)
			c := newClient(t, k, root, func(c *Config) { c.Timeout = 200 * time.Millisecond })
			setFaults(t, k, kpemu.Faults{Latency: kpemu.Duration(time.Second), Routes: []string{"key_metadata"}})
			return c, ct
		}, "metadata", Transient, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, ct := tc.setup(t)
			var err error
			switch tc.op {
			case "unwrap":
				_, _, err = c.Unwrap(tctx(t), ct, aad)
			case "unwrap-other-aad":
				_, _, err = c.Unwrap(tctx(t), ct, []string{"byokd", "cluster:other"})
			case "metadata":
				var info *KeyInfo
				info, err = c.Metadata(tctx(t))
				if err == nil {
					err = CheckUsable(info)
				}
			}
			v := Classify(err)
			if v.Class != tc.class || (tc.reason != "" && v.Reason != tc.reason) {
				t.Fatalf("Classify(%v) = %v %q, want %v %q", err, v.Class, v.Reason, tc.class, tc.reason)
			}
			if strings.Contains(fmt.Sprint(err), testenv.APIKey) {
				t.Fatal("the error names the API key")
			}
			if tc.name == "429" && v.RetryAfter != 7*time.Second {
				t.Fatalf("Retry-After %v, want 7s", v.RetryAfter)
			}
		})
	}
}

func TestClassifyWithoutKeyProtect(t *testing.T) {
	for _, tc := range []struct {
		err   error
		class Class
	}{
		{nil, OK},
		{context.DeadlineExceeded, Transient},
		{errors.New("something odd"), Transient},
		{&kp.Error{StatusCode: 418}, Authoritative},
		{&kp.Error{StatusCode: 502}, Transient},
		{&kp.Error{StatusCode: 409, Reasons: nil}, Authoritative},
		{&StateError{KeyID: "k", State: StateSuspended}, Authoritative},
		{&IAMError{Status: 503, Code: "x"}, Transient},
		{&IAMError{Status: 400, Code: "BXNIM0415E"}, Authoritative},
	} {
		if v := Classify(tc.err); v.Class != tc.class {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, v.Class, tc.class)
		}
	}
	if d := parseRetryAfter("12", time.Now()); d != 12*time.Second {
		t.Fatalf("Retry-After seconds: %v", d)
	}
	now := time.Now()
	if d := parseRetryAfter(now.Add(90*time.Second).UTC().Format(httpTime), now); d < 80*time.Second || d > 91*time.Second {
		t.Fatalf("Retry-After date: %v", d)
	}
}

const httpTime = "Mon, 02 Jan 2006 15:04:05 GMT"

func provisioned(t *testing.T, k *testenv.KP) (root string, c *Client, ct string) {
	t.Helper()
	root = k.RootKey(t, "root")
	c = newClient(t, k, root)
	dek, ct, _, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	clear(dek)
	return root, c, ct
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
