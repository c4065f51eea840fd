// SPDX-License-Identifier: Apache-2.0

// Package block seals and opens storage blocks in byokd's block format,
// shared by strict mode and the storage-engine plugin.
//
// Format 2, written since byokd 0.2: version (1 byte, 2), key generation (4
// bytes, big endian), a 192-bit random nonce, then the ciphertext and its
// 16-byte tag under XAES-256-GCM (https://c2sp.org/XAES-256-GCM): each block
// gets its own AES-256-GCM key, derived from the data key and the nonce's
// first 96 bits with NIST SP 800-108 counter-mode CMAC-AES, and the GCM
// nonce is the nonce's last 96 bits. With 192 random bits per block, 2^64
// blocks under one data key collide with a probability below 2^-64: there is
// no practical limit on how many blocks one key seals, where AES-GCM with
// random 96-bit nonces stops at 2^32 (NIST SP 800-38D).
//
// Format 1 (byokd 0.1): version 1, generation, a 96-bit random nonce and
// AES-256-GCM under the data key itself. Open reads it; Seal no longer
// writes it.
//
// In both, the GCM additional data is the header, the key id (length
// prefixed) and the caller's additional data, so a block moved to another key
// id, or with its header changed, does not open.
//
// Every AES key schedule and GCM state this package builds is wiped before
// it returns; Key keeps a data key's state in memory the caller provides
// (locked, non-dumpable) for as long as the caller wants it.
package block

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Version is the block format version this package writes.
	Version = 2
	// HeaderSize is the size of version, generation and nonce.
	HeaderSize = 1 + 4 + NonceSize
	// NonceSize is the XAES-256-GCM nonce size.
	NonceSize = 24
	// TagSize is the GCM tag size.
	TagSize = 16
	// Overhead is how much longer a block is than its plaintext.
	Overhead = HeaderSize + TagSize
	// KeySize is the data key size (AES-256).
	KeySize = 32
	// MaxKeyID is the longest key id a block can be bound to.
	MaxKeyID = 255

	v1NonceSize  = 12
	v1HeaderSize = 1 + 4 + v1NonceSize
	v1Overhead   = v1HeaderSize + TagSize
)

// ErrOpen is returned for a block that does not open: malformed, tampered
// with, sealed under another key, key id or additional data. Callers never get
// partial plaintext.
var ErrOpen = errors.New("block does not open")

// Seal encrypts plaintext for keyID under key (32 bytes) and returns the block
// appended to dst.
func Seal(dst, key []byte, generation uint32, keyID string, plaintext, aad []byte) ([]byte, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	m, err := newMaster(key)
	if err != nil {
		return nil, err
	}
	defer m.wipe()
	return m.seal(dst, generation, keyID, plaintext, aad)
}

// Generation reads a block's key generation without opening it.
func Generation(blk []byte) (uint32, error) {
	if _, err := headerSize(blk); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(blk[1:5]), nil
}

// PlaintextLen is the length of the plaintext that blk holds, by its
// format: format 1 blocks are 12 bytes shorter than format 2. A block too
// short for its format, or of an unknown format, is ErrOpen.
func PlaintextLen(blk []byte) (int, error) {
	hs, err := headerSize(blk)
	if err != nil {
		return 0, err
	}
	return len(blk) - hs - TagSize, nil
}

// Open decrypts a block for keyID under key and returns the plaintext
// appended to dst. It reads both formats.
func Open(dst, key []byte, keyID string, blk, aad []byte) ([]byte, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	if _, err := headerSize(blk); err != nil {
		return nil, err
	}
	m, err := newMaster(key)
	if err != nil {
		return nil, err
	}
	defer m.wipe()
	return m.open(dst, keyID, blk, aad)
}

// headerSize checks a block's version and length and returns its header size.
func headerSize(blk []byte) (int, error) {
	switch {
	case len(blk) >= Overhead && blk[0] == Version:
		return HeaderSize, nil
	case len(blk) >= v1Overhead && blk[0] == 1:
		return v1HeaderSize, nil
	}
	return 0, ErrOpen
}

func checkKeyID(keyID string) error {
	if len(keyID) == 0 || len(keyID) > MaxKeyID {
		return fmt.Errorf("block key id must be 1 to %d bytes, got %d", MaxKeyID, len(keyID))
	}
	return nil
}

// master is a data key's AES state: the block cipher (for the per-block
// key derivation and format 1), its CMAC subkey, and format 1's GCM.
type master struct {
	b  cipher.Block
	k1 *[16]byte
	v1 cipher.AEAD
}

func newMaster(key []byte) (*master, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("block key must be %d bytes, got %d", KeySize, len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("block cipher: %w", err)
	}
	v1, err := cipher.NewGCM(b)
	if err != nil {
		wipeObject(b)
		return nil, fmt.Errorf("block cipher: %w", err)
	}
	m := &master{b: b, k1: new([16]byte), v1: v1}
	cmacSubkey(b, m.k1)
	return m, nil
}

func (m *master) wipe() {
	wipeObject(m.v1)
	wipeObject(m.b)
	clear(m.k1[:])
}

func (m *master) seal(dst []byte, generation uint32, keyID string, plaintext, aad []byte) ([]byte, error) {
	var hdr [HeaderSize]byte
	hdr[0] = Version
	binary.BigEndian.PutUint32(hdr[1:5], generation)
	if _, err := rand.Read(hdr[5:]); err != nil {
		return nil, fmt.Errorf("block nonce: %w", err)
	}
	g, wipe, err := m.blockGCM(hdr[5:])
	if err != nil {
		return nil, err
	}
	defer wipe()
	out := append(dst, hdr[:]...)
	return g.Seal(out, hdr[5+12:], plaintext, additional(hdr[:], keyID, aad)), nil
}

func (m *master) open(dst []byte, keyID string, blk, aad []byte) ([]byte, error) {
	n, err := headerSize(blk)
	if err != nil {
		return nil, err
	}
	hdr := blk[:n]
	var out []byte
	if blk[0] == 1 {
		out, err = m.v1.Open(dst, hdr[5:], blk[n:], additional(hdr, keyID, aad))
	} else {
		g, wipe, gerr := m.blockGCM(hdr[5:])
		if gerr != nil {
			return nil, gerr
		}
		out, err = g.Open(dst, hdr[5+12:], blk[n:], additional(hdr, keyID, aad))
		wipe()
	}
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// blockGCM is the AES-256-GCM of one format 2 block, keyed by the XAES
// derivation from its nonce, and the func that wipes it once used. The GCM
// may point into the block cipher's state (it does on s390x, where it keeps
// the key slice of the AES block it was made from), so both are wiped
// together, after the last use.
func (m *master) blockGCM(nonce []byte) (cipher.AEAD, func(), error) {
	var k [KeySize]byte
	defer clear(k[:])
	deriveBlockKey(m.b, m.k1, nonce, &k)
	b, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, nil, fmt.Errorf("block cipher: %w", err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		wipeObject(b)
		return nil, nil, fmt.Errorf("block cipher: %w", err)
	}
	return g, func() { wipeObject(g); wipeObject(b) }, nil
}

func additional(hdr []byte, keyID string, aad []byte) []byte {
	a := make([]byte, 0, len(hdr)+1+len(keyID)+len(aad))
	a = append(a, hdr...)
	a = append(a, byte(len(keyID)))
	a = append(a, keyID...)
	return append(a, aad...)
}
