// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"context"
	"fmt"
	"sync"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/secmem"
)

// Memory is the Sealer that keeps the DEK in locked, non-dumpable,
// wipe-on-fork memory (secmem.Buffer). It is the fallback where neither a
// TPM nor CPACF is available. The process should also be made non-dumpable
// (secmem.SetNonDumpable), which the daemon does at start: that is process
// state, not the sealer's to change.
type Memory struct {
	// mu is held for reading through each whole Derive, so Wipe, Seal and
	// Close, which take it for writing, can never change the key halfway
	// through an HMAC computation.
	mu     sync.RWMutex
	buf    *secmem.Buffer
	sealed bool
	closed bool
}

var _ Sealer = (*Memory)(nil)

// NewMemory allocates the protected buffer up front, so a missing
// RLIMIT_MEMLOCK shows at start rather than at the first unwrap.
func NewMemory() (*Memory, error) {
	buf, err := secmem.New(DEKSize)
	if err != nil {
		return nil, fmt.Errorf("memory sealer: %w", err)
	}
	return &Memory{buf: buf}, nil
}

// Name returns "memory".
func (m *Memory) Name() string { return "memory" }

// WipeOnFork reports whether the kernel accepted MADV_WIPEONFORK for the key's
// memory; when false the daemon should warn (kernel older than 4.14).
func (m *Memory) WipeOnFork() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return !m.closed && m.buf.WipeOnFork()
}

// Seal copies dek into the protected buffer, replacing any key sealed
// before, and wipes dek whatever the outcome.
func (m *Memory) Seal(ctx context.Context, dek []byte) error {
	defer secmem.Wipe(dek)
	if err := CheckSeal(ctx, dek); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("seal: %w", ErrClosed)
	}
	// The copy overwrites every byte of the old key in place.
	copy(m.buf.Bytes(), dek)
	m.sealed = true
	return nil
}

// Derive writes HKDF-Expand-SHA256(DEK, info) into out, which must be 32
// bytes. It fails with ErrWiped when no DEK is sealed.
func (m *Memory) Derive(ctx context.Context, info []byte, out []byte) error {
	if err := CheckDerive(ctx, info, out); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	switch {
	case m.closed:
		return fmt.Errorf("derive: %w", ErrClosed)
	case !m.sealed:
		return fmt.Errorf("derive: %w", ErrWiped)
	}
	k, err := datakey.Derive(m.buf.Bytes(), info)
	if err != nil {
		return fmt.Errorf("derive: %w", err)
	}
	copy(out, k[:])
	secmem.Wipe(k[:])
	return nil
}

// Wipe zeroes the sealed DEK; Derive returns ErrWiped until the next Seal.
func (m *Memory) Wipe(ctx context.Context) error {
	// No ctx check: wiping is how the node locks, and must not be skipped
	// because a caller's deadline passed.
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil // Close already destroyed the key
	}
	m.buf.Wipe()
	m.sealed = false
	return nil
}

// Close wipes the DEK and releases its memory. Closing twice is not an
// error.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.buf.Destroy()
	m.sealed = false
	m.closed = true
	return nil
}
