// SPDX-License-Identifier: Apache-2.0

// Package sealtest is the conformance suite every seal.Sealer backend runs.
package sealtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
)

// Run checks that the Sealers made by newSealer behave as seal.Sealer
// documents. newSealer is called once per subtest and must return a fresh,
// empty Sealer; Run closes it, and newSealer may register its own cleanup
// too, since Close is idempotent.
func Run(t *testing.T, newSealer func(t *testing.T) seal.Sealer) {
	fresh := func(t *testing.T) seal.Sealer {
		t.Helper()
		s := newSealer(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s seal.Sealer)
	}{
		{"HasName", testHasName},
		{"DeriveBeforeSealFailsWithErrWiped", testDeriveBeforeSeal},
		{"DeriveEqualsDatakeyDerive", testDeriveEqualsDatakey},
		{"SealWipesCallersDEK", testSealWipesDEK},
		{"SealRejectsWrongSizeDEKAndStillWipesIt", testSealRejectsWrongSize},
		{"DeriveRejectsWrongSizeOut", testDeriveRejectsWrongSizeOut},
		{"WipeThenDeriveFailsWithErrWiped", testWipeThenDerive},
		{"ResealAfterWipeDerivesFromNewDEK", testResealAfterWipe},
		{"SealReplacesSealedDEK", testSealReplaces},
		{"DeriveWithCanceledContextFails", testCanceledContext},
		{"ConcurrentDeriveDuringWipeAndResealNeverReturnsWrongKey", testConcurrent},
		{"CloseThenDeriveAndSealFailWithErrClosed", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, fresh(t)) })
	}
}

// newDEK returns a random DEK; the caller keeps it to compute expected
// values, and hands Seal a copy, which Seal wipes.
func newDEK(t *testing.T) []byte {
	t.Helper()
	dek := make([]byte, seal.DEKSize)
	rand.Read(dek)
	return dek
}

func sealCopy(t *testing.T, s seal.Sealer, dek []byte) {
	t.Helper()
	if err := s.Seal(t.Context(), bytes.Clone(dek)); err != nil {
		t.Fatalf("Seal: %v", err)
	}
}

func want(t *testing.T, dek, info []byte) [datakey.Size]byte {
	t.Helper()
	k, err := datakey.Derive(dek, info)
	if err != nil {
		t.Fatalf("datakey.Derive: %v", err)
	}
	return k
}

func derive(t *testing.T, s seal.Sealer, info []byte) ([]byte, error) {
	t.Helper()
	out := make([]byte, seal.DEKSize)
	return out, s.Derive(t.Context(), info, out)
}

func infos(t *testing.T) [][]byte {
	t.Helper()
	long, err := datakey.Info(string(bytes.Repeat([]byte("c"), datakey.MaxClusterIDLen)),
		string(bytes.Repeat([]byte("k"), datakey.MaxKeyIDLen)))
	if err != nil {
		t.Fatal(err)
	}
	short, err := datakey.Info("cluster-1", "db/table-1")
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{short, long, {}, []byte("byokd/v1/cluster-1/db/table-2")}
}

func testHasName(t *testing.T, s seal.Sealer) {
	if s.Name() == "" {
		t.Fatal("Name is empty")
	}
}

func testDeriveBeforeSeal(t *testing.T, s seal.Sealer) {
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive before Seal: error %v, want ErrWiped", err)
	}
}

func testDeriveEqualsDatakey(t *testing.T, s seal.Sealer) {
	dek := newDEK(t)
	sealCopy(t, s, dek)
	for _, info := range infos(t) {
		got, err := derive(t, s, info)
		if err != nil {
			t.Fatalf("Derive(%q): %v", info, err)
		}
		if w := want(t, dek, info); !bytes.Equal(got, w[:]) {
			t.Fatalf("Derive(%q) differs from datakey.Derive on the same DEK", info)
		}
	}
}

func testSealWipesDEK(t *testing.T, s seal.Sealer) {
	dek := newDEK(t)
	if err := s.Seal(t.Context(), dek); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dek, make([]byte, seal.DEKSize)) {
		t.Fatal("caller's dek is not zero after Seal")
	}
}

func testSealRejectsWrongSize(t *testing.T, s seal.Sealer) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		dek := bytes.Repeat([]byte{0xa5}, n)
		if err := s.Seal(t.Context(), dek); err == nil {
			t.Errorf("Seal of a %d-byte dek succeeded", n)
		}
		if !bytes.Equal(dek, make([]byte, n)) {
			t.Errorf("rejected %d-byte dek was not wiped", n)
		}
	}
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after rejected Seals: error %v, want ErrWiped", err)
	}
}

func testDeriveRejectsWrongSizeOut(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	for _, n := range []int{0, 16, 31, 33, 64} {
		if err := s.Derive(t.Context(), []byte("x"), make([]byte, n)); err == nil {
			t.Errorf("Derive into a %d-byte out succeeded", n)
		}
	}
}

func testWipeThenDerive(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	if _, err := derive(t, s, []byte("x")); err != nil {
		t.Fatalf("Derive after Seal: %v", err)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: error %v, want ErrWiped", err)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatalf("second Wipe: %v", err)
	}
}

func testResealAfterWipe(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	dek := newDEK(t)
	sealCopy(t, s, dek)
	got, err := derive(t, s, []byte("x"))
	if err != nil {
		t.Fatalf("Derive after reseal: %v", err)
	}
	if w := want(t, dek, []byte("x")); !bytes.Equal(got, w[:]) {
		t.Fatal("Derive after reseal does not use the new DEK")
	}
}

func testSealReplaces(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	dek := newDEK(t)
	sealCopy(t, s, dek)
	got, err := derive(t, s, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if w := want(t, dek, []byte("x")); !bytes.Equal(got, w[:]) {
		t.Fatal("Derive after a second Seal does not use the second DEK")
	}
}

func testCanceledContext(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := make([]byte, seal.DEKSize)
	if err := s.Derive(ctx, []byte("x"), out); !errors.Is(err, context.Canceled) {
		t.Fatalf("Derive with canceled context: error %v, want context.Canceled", err)
	}
}

func testConcurrent(t *testing.T, s seal.Sealer) {
	const derivers = 32
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	deks := [2][]byte{newDEK(t), newDEK(t)}
	ins := infos(t)
	// expected[i][j] is the key for deks[i] and ins[j].
	var expected [2][][datakey.Size]byte
	for i, dek := range deks {
		for _, info := range ins {
			expected[i] = append(expected[i], want(t, dek, info))
		}
	}
	sealCopy(t, s, deks[0])

	var ok, wiped atomic.Int64
	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Wipe(context.Background()); err != nil {
				t.Errorf("Wipe: %v", err)
				return
			}
			if err := s.Seal(context.Background(), bytes.Clone(deks[i%2])); err != nil {
				t.Errorf("Seal: %v", err)
				return
			}
		}
	})
	var readers sync.WaitGroup
	for g := range derivers {
		readers.Go(func() {
			out := make([]byte, seal.DEKSize)
			for r := range rounds {
				j := (g + r) % len(ins)
				err := s.Derive(context.Background(), ins[j], out)
				switch {
				case errors.Is(err, seal.ErrWiped):
					wiped.Add(1)
				case err != nil:
					t.Errorf("Derive: %v", err)
					return
				case bytes.Equal(out, expected[0][j][:]) || bytes.Equal(out, expected[1][j][:]):
					ok.Add(1)
				default:
					t.Errorf("Derive returned a key from neither sealed DEK")
					return
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	writer.Wait()
	t.Logf("%d derives succeeded, %d saw ErrWiped", ok.Load(), wiped.Load())
	if ok.Load() == 0 {
		t.Fatal("no Derive succeeded while the key was being resealed")
	}
}

func testClose(t *testing.T, s seal.Sealer) {
	sealCopy(t, s, newDEK(t))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrClosed) {
		t.Fatalf("Derive after Close: error %v, want ErrClosed", err)
	}
	dek := newDEK(t)
	if err := s.Seal(t.Context(), dek); !errors.Is(err, seal.ErrClosed) {
		t.Fatalf("Seal after Close: error %v, want ErrClosed", err)
	}
	if !bytes.Equal(dek, make([]byte, seal.DEKSize)) {
		t.Fatal("dek given to a closed Sealer was not wiped")
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatalf("Wipe after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
