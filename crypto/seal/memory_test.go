// SPDX-License-Identifier: Apache-2.0

package seal_test

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/sealtest"
)

func newMemory(t testing.TB) *seal.Memory {
	t.Helper()
	m, err := seal.NewMemory()
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestMemoryConformsToSealer(t *testing.T) {
	sealtest.Run(t, func(t *testing.T) seal.Sealer { return newMemory(t) })
}

func BenchmarkMemoryDerive(b *testing.B) {
	m := newMemory(b)
	dek := make([]byte, seal.DEKSize)
	rand.Read(dek)
	if err := m.Seal(b.Context(), dek); err != nil {
		b.Fatal(err)
	}
	info := []byte("byokd/v1/prod-eu/db1.collection-7")
	out := make([]byte, seal.DEKSize)
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Derive(b.Context(), info, out); err != nil {
			b.Fatal(err)
		}
	}
	if bytes.Equal(out, make([]byte, seal.DEKSize)) {
		b.Fatal("Derive left out zero")
	}
}

func BenchmarkMemoryDeriveParallel(b *testing.B) {
	m := newMemory(b)
	dek := make([]byte, seal.DEKSize)
	rand.Read(dek)
	if err := m.Seal(b.Context(), dek); err != nil {
		b.Fatal(err)
	}
	info := []byte("byokd/v1/prod-eu/db1.collection-7")
	b.RunParallel(func(pb *testing.PB) {
		out := make([]byte, seal.DEKSize)
		for pb.Next() {
			if err := m.Derive(b.Context(), info, out); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
