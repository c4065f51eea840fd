// Package testenv starts the real parts byokd's tests run against — kpemu,
// and later byokd itself — and cleans them up with t.Cleanup.
package testenv

import (
	"context"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/kpemu"
)

// Test credentials for the emulator. They are not secrets, but tests that
// check secret hygiene search output for them.
const (
	InstanceID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	APIKey     = "testenv-api-key-5b0d9e2a41"
)

// KP is a running emulator.
type KP struct {
	*kpemu.Instance
}

// StartKP starts kpemu on a free loopback port. Waiting periods the service
// enforces (30 s before enable, 1 h between rotations) are turned off unless
// mutate turns them on; mutate may change any other setting too.
func StartKP(t testing.TB, mutate ...func(*kpemu.Config)) *KP {
	t.Helper()
	cfg := kpemu.Config{
		InstanceID:     InstanceID,
		APIKeys:        []string{APIKey},
		ActionCooldown: -1,
		RotateCooldown: -1,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	in, err := kpemu.Listen(cfg, "127.0.0.1:0", "", "")
	if err != nil {
		t.Fatalf("start kpemu: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = in.Close(ctx)
	})
	return &KP{Instance: in}
}

// TokenURL is the emulator's IAM token endpoint.
func (k *KP) TokenURL() string { return k.URL + "/identity/token" }

// Client is the real keyprotect-go-client pointed at the emulator, for a test
// to play the customer: create, disable, enable, delete, rotate keys.
func (k *KP) Client() *kp.Client {
	c, err := kp.New(kp.ClientConfig{
		BaseURL:    k.URL,
		TokenURL:   k.TokenURL(),
		APIKey:     APIKey,
		InstanceID: InstanceID,
		Timeout:    10,
	}, kp.DefaultTransport())
	if err != nil {
		panic("kp client: " + err.Error()) // only a malformed URL fails here
	}
	return c
}

// RootKey creates a root key and returns its id.
func (k *KP) RootKey(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := k.Client().CreateRootKey(ctx, name, nil)
	if err != nil {
		t.Fatalf("create root key: %v", err)
	}
	return key.ID
}

// Do runs one customer action against the emulator and fails the test on error.
func (k *KP) Do(t testing.TB, what string, fn func(ctx context.Context, c *kp.Client) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx, k.Client()); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
