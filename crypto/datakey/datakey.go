// SPDX-License-Identifier: Apache-2.0

// Package datakey derives per-table data keys from the node's DEK with HKDF-Expand-SHA256.
package datakey

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/byokd/byokd/crypto/secmem"
)

// Size is the length of the DEK (used as the HKDF PRK) and of every derived
// data key: one SHA-256 output, so HKDF-Expand needs a single HMAC block.
const Size = sha256.Size

const (
	// Prefix starts every info string; the version lets a future scheme
	// derive different keys from the same DEK.
	Prefix = "byokd/v1/"
	// MaxClusterIDLen is the longest cluster id Info accepts.
	MaxClusterIDLen = 128
	// MaxKeyIDLen is the longest key id Info accepts.
	MaxKeyIDLen = 255
	// MaxInfoLen is the longest info Info can build, and so the longest
	// Derive accepts: the bound lets Derive keep the HMAC input on the
	// stack, where it can be wiped, instead of in heap buffers.
	MaxInfoLen = len(Prefix) + MaxClusterIDLen + 1 + MaxKeyIDLen
)

var (
	// ErrInvalidClusterID means the cluster id is empty, too long, or has
	// a byte that is not printable ASCII or is '/'.
	ErrInvalidClusterID = errors.New("invalid cluster id")
	// ErrInvalidKeyID means the key id is empty, too long, or has a byte
	// that is not printable ASCII.
	ErrInvalidKeyID = errors.New("invalid key id")
)

// Info builds the HKDF info for a data key: "byokd/v1/" + clusterID + "/" +
// keyID. clusterID is 1–128 printable ASCII bytes without '/'; keyID is
// 1–255 printable ASCII bytes (0x20–0x7e) and may contain '/'. Because the
// cluster id cannot hold '/', different (clusterID, keyID) pairs never give
// the same info, and so never the same key.
func Info(clusterID, keyID string) ([]byte, error) {
	return build(Prefix, clusterID, keyID, MaxKeyIDLen)
}

// build checks the ids and makes prefix + clusterID + "/" + id.
func build(prefix, clusterID, id string, maxIDLen int) ([]byte, error) {
	if err := check(clusterID, MaxClusterIDLen, true); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidClusterID, err)
	}
	if err := check(id, maxIDLen, false); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKeyID, err)
	}
	info := make([]byte, 0, len(prefix)+len(clusterID)+1+len(id))
	info = append(info, prefix...)
	info = append(info, clusterID...)
	info = append(info, '/')
	info = append(info, id...)
	return info, nil
}

// KMIPPrefix starts the info of every key that wraps a KMIP object's key
// material. It differs from Prefix at its seventh byte ('k', not 'v'), so
// no info Info builds equals one KMIPInfo builds: no key id a caller of the
// key socket picks gives it a KMIP object's wrapping key.
const KMIPPrefix = "byokd/kmip/v1/"

// MaxObjectIDLen is the longest object id KMIPInfo accepts: the info fits
// in MaxInfoLen.
const MaxObjectIDLen = MaxInfoLen - len(KMIPPrefix) - MaxClusterIDLen - 1

// KMIPInfo builds the HKDF info for the key that wraps one KMIP object:
// "byokd/kmip/v1/" + clusterID + "/" + objectID, with the checks of Info
// (objectID at most MaxObjectIDLen bytes).
func KMIPInfo(clusterID, objectID string) ([]byte, error) {
	return build(KMIPPrefix, clusterID, objectID, MaxObjectIDLen)
}

// check validates an id without echoing it: ids come from callers of the
// key socket, and an error may end up in a log.
func check(id string, maxLen int, noSlash bool) error {
	if len(id) == 0 || len(id) > maxLen {
		return fmt.Errorf("length %d, want 1 to %d bytes", len(id), maxLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d is %#02x, want printable ASCII", i, c)
		}
		if noSlash && c == '/' {
			return fmt.Errorf("byte %d is '/', which separates the cluster id from the key id", i)
		}
	}
	return nil
}

// HMAC-SHA256 constants (RFC 2104).
const (
	blockSize = 64
	ipad      = 0x36
	opad      = 0x5c
)

// Derive returns HKDF-Expand-SHA256(prk, info, 32) (RFC 5869 §2.3). With
// L = 32 that is the single block T(1) = HMAC-SHA256(prk, info || 0x01).
// prk must be Size bytes and info at most MaxInfoLen bytes. Errors never
// contain key bytes.
//
// HMAC is written out here rather than taken from crypto/hmac because
// crypto/hmac keeps prk XOR ipad and prk XOR opad — each as good as the DEK —
// in heap buffers it never clears, one pair per call. Here the padded key
// blocks live in fixed-size stack arrays that are wiped before returning,
// and crypto/sha256 is fed whole messages, so its state after the key block
// is overwritten by the following blocks. The tests check this against
// crypto/hmac and RFC 5869.
func Derive(prk, info []byte) ([Size]byte, error) {
	var out [Size]byte
	if len(prk) != Size {
		return out, fmt.Errorf("derive data key: prk is %d bytes, want %d", len(prk), Size)
	}
	if len(info) > MaxInfoLen {
		return out, fmt.Errorf("derive data key: info is %d bytes, want at most %d", len(info), MaxInfoLen)
	}
	// inner = SHA256((prk ^ ipad) || info || 0x01)
	var in [blockSize + MaxInfoLen + 1]byte
	for i := range blockSize {
		k := byte(0)
		if i < Size {
			k = prk[i]
		}
		in[i] = k ^ ipad
	}
	n := blockSize + copy(in[blockSize:], info)
	in[n] = 0x01
	n++
	inner := sha256.Sum256(in[:n])
	secmem.Wipe(in[:blockSize])

	// T(1) = SHA256((prk ^ opad) || inner)
	var outer [blockSize + Size]byte
	for i := range blockSize {
		k := byte(0)
		if i < Size {
			k = prk[i]
		}
		outer[i] = k ^ opad
	}
	copy(outer[blockSize:], inner[:])
	out = sha256.Sum256(outer[:])
	secmem.Wipe(outer[:])
	secmem.Wipe(inner[:])
	return out, nil
}
