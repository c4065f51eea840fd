// SPDX-License-Identifier: Apache-2.0

package tpm

import (
	"testing"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
)

// benchDerive measures Derive of one data key at a time, the way the key
// server calls it, and reports derivations per second.
func benchDerive(b *testing.B, s seal.Sealer) {
	mustSeal(b, s, randomDEK(b))
	info, err := datakey.Info("cluster-1", "db/table-orders")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, seal.DEKSize)
	for b.Loop() {
		if err := s.Derive(b.Context(), info, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "derives/s")
}

// BenchmarkDerive is the TPM backend against swtpm over a socketpair.
func BenchmarkDerive(b *testing.B) {
	s, _ := newSealer(b)
	benchDerive(b, s)
}

// BenchmarkMemoryDerive is the memory backend, the baseline for
// BenchmarkDerive.
func BenchmarkMemoryDerive(b *testing.B) {
	m, err := seal.NewMemory()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	benchDerive(b, m)
}
