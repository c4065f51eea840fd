// SPDX-License-Identifier: Apache-2.0

// Package seal holds the node's DEK behind a Sealer so data keys can be derived without handing the DEK out.
package seal

import (
	"context"
	"errors"
	"fmt"

	"github.com/byokd/byokd/crypto/datakey"
)

// Sealer holds the node's DEK so that data keys can be derived without the clear DEK being handed out.
// Implementations are safe for concurrent use.
type Sealer interface {
	// Name is the backend's name in config and logs ("memory", "tpm", "cpacf").
	Name() string
	// Seal takes ownership of dek (32 bytes): it copies it into protected storage and wipes the caller's slice.
	// The slice is wiped even when Seal fails. Sealing again replaces the key.
	Seal(ctx context.Context, dek []byte) error
	// Derive computes HKDF-Expand-SHA256(DEK, info) (32 bytes) into out. ErrWiped when no DEK is sealed.
	Derive(ctx context.Context, info []byte, out []byte) error
	// Wipe destroys the sealed DEK; Derive fails with ErrWiped until the next Seal.
	Wipe(ctx context.Context) error
	// Close wipes the DEK and releases the backend. Afterwards Seal and
	// Derive fail with ErrClosed; Wipe and Close return nil, since nothing
	// is left to wipe.
	Close() error
}

var (
	// ErrWiped is returned by Derive when no DEK is sealed: before the first
	// Seal, or after Wipe (the node is locked).
	ErrWiped = errors.New("no key sealed")
	// ErrClosed is returned by calls on a Sealer after Close.
	ErrClosed = errors.New("sealer closed")
	// ErrReseal is returned by Derive when the sealed key can no longer be
	// used and the DEK has to be sealed again: for the cpacf backend, the
	// firmware wrapping key changed (re-IPL, guest relocation), so the
	// protected key is void. Until the next Seal every Derive fails with
	// ErrReseal; the caller unwraps the DEK again and calls Seal.
	ErrReseal = errors.New("sealed key is no longer valid, seal the key again")
)

// DEKSize is the size of the DEK a Sealer accepts and of a derived key.
const DEKSize = 32

// CheckSeal is the argument check every backend's Seal starts with: a
// 32-byte dek and a live context. The caller still wipes dek.
func CheckSeal(ctx context.Context, dek []byte) error {
	if len(dek) != DEKSize {
		return fmt.Errorf("seal: dek is %d bytes, want %d", len(dek), DEKSize)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// CheckDerive is the argument check every backend's Derive starts with: a
// 32-byte out, an info no longer than datakey.Info can build, and a live
// context.
func CheckDerive(ctx context.Context, info, out []byte) error {
	if len(out) != DEKSize {
		return fmt.Errorf("derive: out is %d bytes, want %d", len(out), DEKSize)
	}
	if len(info) > datakey.MaxInfoLen {
		return fmt.Errorf("derive: info is %d bytes, want at most %d", len(info), datakey.MaxInfoLen)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("derive: %w", err)
	}
	return nil
}
