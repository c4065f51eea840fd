package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/sealtest"
	"github.com/byokd/byokd/internal/testenv"
)

func newSWTPM(t testing.TB) *Sealer {
	t.Helper()
	s, err := New(NewStream(testenv.SWTPM(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the sealer suite against a real swtpm.
func TestConformance(t *testing.T) {
	sealtest.Run(t, func(t *testing.T) seal.Sealer { return newSWTPM(t) })
}

// TestSameDataKeysAsMemory: a node can move between backends without losing
// data — the same DEK gives bit-identical data keys in the TPM and in memory.
func TestSameDataKeysAsMemory(t *testing.T) {
	ctx := context.Background()
	tp := newSWTPM(t)
	mem, err := seal.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for i := 0; i < 5; i++ {
		dek := make([]byte, 32)
		_, _ = rand.Read(dek)
		a, b := bytes.Clone(dek), bytes.Clone(dek)
		if err := tp.Seal(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := mem.Seal(ctx, b); err != nil {
			t.Fatal(err)
		}
		for _, keyID := range []string{"table:orders", "db:admin", string(bytes.Repeat([]byte("k"), 255))} {
			info, err := datakey.Info("cluster-1", keyID)
			if err != nil {
				t.Fatal(err)
			}
			var x, y [32]byte
			if err := tp.Derive(ctx, info, x[:]); err != nil {
				t.Fatal(err)
			}
			if err := mem.Derive(ctx, info, y[:]); err != nil {
				t.Fatal(err)
			}
			want, _ := datakey.Derive(dek, info)
			if x != y || x != want {
				t.Fatalf("DEK %d, key id %.20q: tpm and memory data keys differ", i, keyID)
			}
		}
	}
}

func transientHandles(t *testing.T, s *Sealer) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTTransient) << 24, PropertyCount: 64}.Execute(s.tpm)
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	return len(h.Handle)
}

// TestWipeLeavesNoObjectLoaded: after Wipe (and after every Seal, for the
// primary) no transient object stays in the TPM.
func TestWipeLeavesNoObjectLoaded(t *testing.T) {
	ctx := context.Background()
	s := newSWTPM(t)
	if err := s.Seal(ctx, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if n := transientHandles(t, s); n != 1 {
		t.Fatalf("%d transient objects after Seal, want 1 (the keyed-hash object)", n)
	}
	if err := s.Seal(ctx, bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	if n := transientHandles(t, s); n != 1 {
		t.Fatalf("%d transient objects after a second Seal, want 1", n)
	}
	if err := s.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if n := transientHandles(t, s); n != 0 {
		t.Fatalf("%d transient objects after Wipe", n)
	}
	if err := s.Derive(ctx, []byte("x"), make([]byte, 32)); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: %v", err)
	}
}

// TestTPMGoneFailsClearly: when the TPM goes away (reset, swtpm stopped),
// Derive fails with an error rather than a value.
func TestTPMGoneFailsClearly(t *testing.T) {
	ctx := context.Background()
	f := testenv.SWTPM(t)
	s, err := New(NewStream(f))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := make([]byte, 32)
	if err := s.Derive(ctx, []byte("x"), out); err == nil || !bytes.Equal(out, make([]byte, 32)) {
		t.Fatalf("Derive with the TPM gone: %v, out %x", err, out)
	}
}

func BenchmarkDerive(b *testing.B) {
	ctx := context.Background()
	for _, backend := range []string{"memory", "tpm"} {
		b.Run(backend, func(b *testing.B) {
			var s seal.Sealer
			if backend == "tpm" {
				s = newSWTPM(b)
			} else {
				m, err := seal.NewMemory()
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				s = m
			}
			if err := s.Seal(ctx, make([]byte, 32)); err != nil {
				b.Fatal(err)
			}
			info, _ := datakey.Info("c", "table:orders")
			out := make([]byte, 32)
			for b.Loop() {
				if err := s.Derive(ctx, info, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "derives/s")
		})
	}
}
