// SPDX-License-Identifier: Apache-2.0

// Package cpacf seals the DEK as a CPACF protected HMAC key on IBM Z and derives data keys with the KMAC instruction.
package cpacf

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
)

// ErrUnavailable is returned by New when this machine cannot run the
// backend: not linux/s390x, no /dev/pkey, a kernel without HMAC protected
// keys, or a CPU without the KMAC HMAC-SHA-256 with encrypted key function.
// With backend = "auto" the daemon then tries the next backend; an explicit
// backend = "cpacf" fails to start.
var ErrUnavailable = errors.New("cpacf sealer not available")

// checkInfo is the derivation input of the known-answer test that proves a
// new protected key holds the DEK. It cannot collide with a data key's info,
// which datakey.Info always starts with "byokd/v1/".
var checkInfo = []byte("byokd/cpacf/protected-key-check")

// errCheckFailed means a new protected key failed its known-answer test.
var errCheckFailed = errors.New("check protected key")

// Sealer holds the DEK as a CPACF protected key: the DEK wrapped by a
// firmware key that no software, the kernel included, can read. Data keys
// are HMAC-SHA-256 computed by the KMAC instruction inside the CPU, so they
// are bit-identical to those of the other backends, and the clear DEK is
// not in memory after Seal returns.
//
// The protected key is void once the firmware wrapping key changes (re-IPL,
// guest relocation); Derive then fails with seal.ErrReseal until the next
// Seal.
type Sealer struct {
	dev  device
	kmac kmacer

	// mu is held for reading through each whole Derive, so Wipe, Seal and
	// Close, which take it for writing, never change the key halfway
	// through an instruction.
	mu sync.RWMutex
	// pk holds the protected key: not the DEK, but usable through CPACF on
	// this system until the wrapping key changes, so it is kept locked and
	// out of core dumps too.
	pk *secmem.Buffer
	// scratch holds the clear key token and the new protected key while
	// Seal runs.
	scratch *secmem.Buffer
	sealed  bool
	closed  bool
	// stale is set by a Derive that found the wrapping key changed; Derive
	// then fails fast until Seal or Wipe.
	stale atomic.Bool
}

var _ seal.Sealer = (*Sealer)(nil)

// New opens /dev/pkey, checks the CPU for KMAC HMAC-SHA-256 with an
// encrypted key, and proves the whole path with a random key: made into a
// protected key by the kernel, then an HMAC through the instruction compared
// with the same HMAC in software. It fails with ErrUnavailable when this
// machine cannot do that.
func New() (*Sealer, error) {
	dev, k, err := openPlatform()
	if err != nil {
		return nil, err
	}
	return newSealer(dev, k)
}

// newSealer builds the Sealer on dev and k, and runs the probe New
// describes. It closes dev when it fails.
func newSealer(dev device, k kmacer) (s *Sealer, err error) {
	defer func() {
		if err != nil {
			_ = dev.Close()
		}
	}()
	if !installed(k.Query(), fcPHMACSHA256) {
		return nil, fmt.Errorf("%w: the CPU has no KMAC HMAC-SHA-256 with encrypted key (function code %#x)", ErrUnavailable, fcPHMACSHA256)
	}
	pk, err := secmem.New(protKeySize)
	if err != nil {
		return nil, fmt.Errorf("cpacf sealer: %w", err)
	}
	scratch, err := secmem.New(tokenSize + protKeySize)
	if err != nil {
		pk.Destroy()
		return nil, fmt.Errorf("cpacf sealer: %w", err)
	}
	s = &Sealer{dev: dev, kmac: k, pk: pk, scratch: scratch}
	defer func() {
		if err != nil {
			pk.Destroy()
			scratch.Destroy()
		}
	}()

	probe := make([]byte, seal.DEKSize)
	defer secmem.Wipe(probe)
	rand.Read(probe)
	_, err = s.protect(probe)
	s.scratch.Wipe()
	switch reason := errnoReason(err); {
	case reason != "":
		return nil, fmt.Errorf("%w: %w (%s)", ErrUnavailable, err, reason)
	case errors.Is(err, errCheckFailed):
		// Not a kernel this code knows how to talk to, or not the
		// instruction it expects: never seal a DEK with it.
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case err != nil:
		return nil, fmt.Errorf("cpacf probe: %w", err)
	}
	return s, nil
}

// Name returns "cpacf".
func (s *Sealer) Name() string { return "cpacf" }

// Seal makes dek into a protected key, proves that the protected key holds
// dek (a known-answer test through the instruction), and wipes dek and every
// other clear copy, whatever the outcome. The clear key also passes through
// the kernel, which frees its copy with kfree_sensitive (memzero_explicit in
// older drivers/s390/crypto/pkey_api.c); PCKMO encrypts the key in place.
// If the key cannot be protected, the key sealed before is wiped as well:
// Derive fails with seal.ErrWiped rather than derive from a key the caller
// meant to replace.
func (s *Sealer) Seal(ctx context.Context, dek []byte) error {
	defer secmem.Wipe(dek)
	if err := seal.CheckSeal(ctx, dek); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("seal: %w", seal.ErrClosed)
	}
	defer s.scratch.Wipe()
	pk, err := s.protect(dek)
	if err != nil {
		s.pk.Wipe()
		s.sealed = false
		s.stale.Store(false)
		return fmt.Errorf("seal: %w", err)
	}
	copy(s.pk.Bytes(), pk)
	s.sealed = true
	s.stale.Store(false)
	return nil
}

// protect makes key (seal.DEKSize bytes) into an HMAC_512 protected key in
// s.scratch and returns it, after checking with a known-answer test that the
// instruction computes with it the HMAC software computes with key. Callers
// hold s.mu for writing (or own s alone) and wipe s.scratch.
func (s *Sealer) protect(key []byte) ([]byte, error) {
	buf := s.scratch.Bytes()
	token, pk := buf[:tokenSize], buf[tokenSize:]

	want, err := datakey.Derive(key, checkInfo)
	if err != nil {
		return nil, err
	}
	defer secmem.Wipe(want[:])
	var got [datakey.Size]byte
	defer secmem.Wipe(got[:])

	// A wrapping key change between making the protected key and using it
	// is possible (a guest relocated just then), and then the key is made
	// again once, from the clear key still at hand.
	for attempt := 0; ; attempt++ {
		putClearKeyToken(token, key)
		n, typ, err := s.dev.ProtectKey(token, pk)
		secmem.Wipe(token)
		if err != nil {
			return nil, fmt.Errorf("make protected key (PKEY_KBLOB2PROTK3): %w", err)
		}
		if typ != keyTypeHMAC512 || n != protKeySize {
			return nil, fmt.Errorf("%w: the kernel made a key of type %d and %d bytes, want type %d and %d bytes", errCheckFailed, typ, n, keyTypeHMAC512, protKeySize)
		}
		err = phmac(s.kmac, pk, checkInfo, got[:])
		if errors.Is(err, errWrappingKeyChanged) && attempt == 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errCheckFailed, err)
		}
		break
	}
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return nil, fmt.Errorf("%w: the KMAC instruction's HMAC differs from software HMAC-SHA256 with the same key", errCheckFailed)
	}
	return pk, nil
}

// Derive writes HKDF-Expand-SHA256(DEK, info) into out, which must be 32
// bytes, computed by the KMAC instruction with the protected key. It fails
// with seal.ErrWiped when no DEK is sealed, and with seal.ErrReseal when the
// firmware wrapping key changed since Seal.
func (s *Sealer) Derive(ctx context.Context, info []byte, out []byte) error {
	if err := seal.CheckDerive(ctx, info, out); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return fmt.Errorf("derive: %w", seal.ErrClosed)
	case !s.sealed:
		return fmt.Errorf("derive: %w", seal.ErrWiped)
	case s.stale.Load():
		return fmt.Errorf("derive: %w", seal.ErrReseal)
	}
	err := phmac(s.kmac, s.pk.Bytes(), info, out)
	if errors.Is(err, errWrappingKeyChanged) {
		// Set while holding the read lock, so a Seal, which takes the
		// write lock and clears the flag, cannot come in between.
		s.stale.Store(true)
		return fmt.Errorf("derive: firmware wrapping key changed: %w", seal.ErrReseal)
	}
	if err != nil {
		return fmt.Errorf("derive: %w", err)
	}
	return nil
}

// Wipe zeroes the protected key; Derive returns seal.ErrWiped until the
// next Seal.
func (s *Sealer) Wipe(ctx context.Context) error {
	// No ctx check: wiping is how the node locks, and must not be skipped
	// because a caller's deadline passed.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil // Close already destroyed the key
	}
	s.pk.Wipe()
	s.sealed = false
	s.stale.Store(false)
	return nil
}

// Close wipes the protected key, releases its memory and closes /dev/pkey.
// Closing twice is not an error.
func (s *Sealer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.pk.Destroy()
	s.scratch.Destroy()
	s.sealed = false
	s.closed = true
	if err := s.dev.Close(); err != nil {
		return fmt.Errorf("close %s: %w", pkeyPath, err)
	}
	return nil
}
