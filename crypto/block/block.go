// Package block seals and opens storage blocks with AES-256-GCM in byokd's
// block format, shared by strict mode and the storage-engine plugin.
//
// A block is: version (1 byte, 1), key generation (4 bytes, big endian), a
// 96-bit random nonce, then the AES-256-GCM ciphertext and its 16-byte tag.
// The GCM additional data is the 17-byte header, the key id (length
// prefixed) and the caller's additional data, so a block moved to another key
// id, or with its header changed, does not open.
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
	Version = 1
	// HeaderSize is the size of version, generation and nonce.
	HeaderSize = 1 + 4 + NonceSize
	// NonceSize is the GCM nonce size.
	NonceSize = 12
	// TagSize is the GCM tag size.
	TagSize = 16
	// Overhead is how much longer a block is than its plaintext.
	Overhead = HeaderSize + TagSize
	// KeySize is the data key size (AES-256).
	KeySize = 32
	// MaxKeyID is the longest key id a block can be bound to.
	MaxKeyID = 255
)

// ErrOpen is returned for a block that does not open: malformed, tampered
// with, sealed under another key, key id or additional data. Callers never get
// partial plaintext.
var ErrOpen = errors.New("block does not open")

// Seal encrypts plaintext for keyID under key (32 bytes) and returns the block
// appended to dst.
func Seal(dst, key []byte, generation uint32, keyID string, plaintext, aad []byte) ([]byte, error) {
	g, err := newGCM(key, keyID)
	if err != nil {
		return nil, err
	}
	var hdr [HeaderSize]byte
	hdr[0] = Version
	binary.BigEndian.PutUint32(hdr[1:5], generation)
	if _, err := rand.Read(hdr[5:]); err != nil {
		return nil, fmt.Errorf("block nonce: %w", err)
	}
	out := append(dst, hdr[:]...)
	return g.Seal(out, hdr[5:], plaintext, additional(hdr[:], keyID, aad)), nil
}

// Generation reads a block's key generation without opening it.
func Generation(blk []byte) (uint32, error) {
	if len(blk) < Overhead || blk[0] != Version {
		return 0, ErrOpen
	}
	return binary.BigEndian.Uint32(blk[1:5]), nil
}

// Open decrypts a block for keyID under key and returns the plaintext
// appended to dst.
func Open(dst, key []byte, keyID string, blk, aad []byte) ([]byte, error) {
	if len(blk) < Overhead || blk[0] != Version {
		return nil, ErrOpen
	}
	g, err := newGCM(key, keyID)
	if err != nil {
		return nil, err
	}
	hdr := blk[:HeaderSize]
	out, err := g.Open(dst, hdr[5:], blk[HeaderSize:], additional(hdr, keyID, aad))
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

func newGCM(key []byte, keyID string) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("block key must be %d bytes, got %d", KeySize, len(key))
	}
	if len(keyID) == 0 || len(keyID) > MaxKeyID {
		return nil, fmt.Errorf("block key id must be 1 to %d bytes, got %d", MaxKeyID, len(keyID))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("block cipher: %w", err)
	}
	return cipher.NewGCM(b)
}

func additional(hdr []byte, keyID string, aad []byte) []byte {
	a := make([]byte, 0, len(hdr)+1+len(keyID)+len(aad))
	a = append(a, hdr...)
	a = append(a, byte(len(keyID)))
	a = append(a, keyID...)
	return append(a, aad...)
}
