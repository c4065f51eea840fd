// SPDX-License-Identifier: Apache-2.0

package node

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/internal/testenv"
)

// TestNodeUnlocksServesAndWipesAtStop builds a node below the process
// against kpemu, runs it until it unlocks, stops it, and finds the key
// wiped.
func TestNodeUnlocksServesAndWipesAtStop(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	sealer, err := seal.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	var transitions []lock.State
	n, err := New(k.NodeConfig(root, t.TempDir(), "node-test"), Deps{APIKey: testenv.APIKey, Sealer: sealer,
		OnTransition: func(_, to lock.Status, _ lock.Event) { transitions = append(transitions, to.State) }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); n.Machine.Status().State != lock.Unlocked; {
		if time.Now().After(deadline) {
			t.Fatalf("not unlocked: %+v", n.Machine.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out [32]byte
	if err := sealer.Derive(ctx, []byte("x"), out[:]); err != nil {
		t.Fatal(err)
	}
	if st := n.Machine.Status(); st.Generation != 1 || len(st.Fingerprint) != 16 || !n.Alive() {
		t.Fatalf("status %+v, alive %v", st, n.Alive())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := sealer.Derive(context.Background(), []byte("x"), out[:]); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("derive after stop: %v, want ErrWiped", err)
	}
	if len(transitions) == 0 || transitions[0] != lock.Unlocked {
		t.Fatalf("transitions %v", transitions)
	}
}

// TestNewFailsCleanly: a state folder that does not exist is an error
// naming it, and what New opened (the sealer it was given) is closed.
func TestNewFailsCleanly(t *testing.T) {
	k := testenv.StartKP(t)
	sealer, err := seal.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	_, err = New(k.NodeConfig("root", missing, "node-test"), Deps{APIKey: testenv.APIKey, Sealer: sealer})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("New with a missing state folder: %v", err)
	}
	if err := sealer.Seal(context.Background(), make([]byte, 32)); !errors.Is(err, seal.ErrClosed) {
		t.Fatalf("the sealer was not closed: %v", err)
	}
}
