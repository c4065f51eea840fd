// SPDX-License-Identifier: Apache-2.0

package cpacf

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
)

// machineSim is a simulated IBM Z for one guest: a firmware wrapping key,
// the pkey device that wraps clear keys under it (PCKMO through
// PKEY_KBLOB2PROTK3), and KMAC PHMAC-SHA-256, which unwraps the key and
// computes a real HMAC-SHA256.
//
// Like the firmware, a simulated protected key is the key encrypted under
// the wrapping key followed by a verification pattern of the wrapping key;
// the instruction ends with condition code 1 when the pattern is not the
// current one. ReIPL draws a new wrapping key, as a re-IPL or a guest
// relocation does.
//
// It checks what the real parts check (token format, key type and length,
// buffer size, function code, flags, message bit length) so that the
// Sealer's requests are tested against the kernel's and the instruction's
// rules, not just against themselves.
type machineSim struct {
	mu       sync.Mutex
	wrapping []byte // AES-256 wrapping key
	wkvp     [wkvpSize]byte

	// Knobs for the unavailable and failure cases.
	noKMACFunction bool          // the query does not show function 0x79
	protectErr     syscall.Errno // ProtectKey fails with this errno
	wrongKeyType   bool          // ProtectKey reports an AES key type
	corruptKey     bool          // ProtectKey returns a key that is not the one given
	reIPLOnceAfter int           // ReIPL after this many more successful ProtectKey calls, once; 0: never

	// What the test inspects afterwards.
	blobs      [][]byte // every blob ProtectKey was given, not copied
	protects   int
	runs       int
	devClosed  bool
	badRequest string // the first request the real part would have refused
}

func newMachineSim() *machineSim {
	m := &machineSim{}
	m.ReIPL()
	return m
}

// ReIPL replaces the wrapping key: every protected key made before is void.
func (m *machineSim) ReIPL() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wrapping = make([]byte, 32)
	rand.Read(m.wrapping)
	m.wkvp = sha256.Sum256(append([]byte("wkvp"), m.wrapping...))
}

func (m *machineSim) refuse(format string, args ...any) {
	if m.badRequest == "" {
		m.badRequest = fmt.Sprintf(format, args...)
	}
}

// keystream is AES-CTR under the wrapping key; XOR with it wraps and
// unwraps. The firmware's wrapping is opaque; this one only needs to hide
// the key and depend on the wrapping key.
func (m *machineSim) keystream(n int) []byte {
	block, err := aes.NewCipher(m.wrapping)
	if err != nil {
		panic(err)
	}
	ks := make([]byte, n)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(ks, ks)
	return ks
}

// device is the simulated /dev/pkey.
func (m *machineSim) device() device { return simDevice{m} }

// kmac is the simulated instruction.
func (m *machineSim) kmac() kmacer { return simKMAC{m} }

type simDevice struct{ m *machineSim }

// ProtectKey follows pkey_ioctl_kblob2protk3 and pckmo_key2protkey
// (drivers/s390/crypto/pkey_api.c, pkey_pckmo.c).
func (d simDevice) ProtectKey(blob, out []byte) (int, uint32, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs = append(m.blobs, blob)
	if m.devClosed {
		return 0, 0, syscall.EBADF
	}
	if m.protectErr != 0 {
		return 0, 0, m.protectErr
	}
	if len(blob) < tokenHeaderSize || len(blob) > 8192 {
		m.refuse("key blob of %d bytes", len(blob))
		return 0, 0, syscall.EINVAL
	}
	typ, ver := blob[0], blob[4]
	keyType := binary.BigEndian.Uint32(blob[8:])
	keyLen := binary.BigEndian.Uint32(blob[12:])
	switch {
	case typ != tokTypeNonCCA || ver != tokVerClearKey:
		m.refuse("token type %#x version %#x, want a clear key token", typ, ver)
		return 0, 0, syscall.EINVAL
	case keyType != keyTypeHMAC512:
		m.refuse("key type %d, want HMAC_512", keyType)
		return 0, 0, syscall.EINVAL
	case keyLen != hmacBlockSize || len(blob) != tokenHeaderSize+int(keyLen):
		m.refuse("clear key of %d bytes in a %d-byte token", keyLen, len(blob))
		return 0, 0, syscall.EINVAL
	case len(out) < protKeySize:
		m.refuse("protected key buffer of %d bytes", len(out))
		return 0, 0, syscall.EINVAL
	}
	key := blob[tokenHeaderSize:]
	ks := m.keystream(hmacBlockSize)
	for i := range hmacBlockSize {
		out[i] = key[i] ^ ks[i]
	}
	copy(out[hmacBlockSize:], m.wkvp[:])
	if m.corruptKey {
		out[0] ^= 1
	}
	m.protects++
	if m.reIPLOnceAfter > 0 {
		m.reIPLOnceAfter--
		if m.reIPLOnceAfter == 0 {
			m.mu.Unlock()
			m.ReIPL()
			m.mu.Lock()
		}
	}
	if m.wrongKeyType {
		return protKeySize, 3, nil
	}
	return protKeySize, keyTypeHMAC512, nil
}

func (d simDevice) Close() error {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	d.m.devClosed = true
	return nil
}

type simKMAC struct{ m *machineSim }

func (k simKMAC) Query() (status [16]byte) {
	status[0] = 0x80 // the query function itself
	if !k.m.noKMACFunction {
		status[fcPHMACSHA256>>3] |= 0x80 >> (fcPHMACSHA256 & 7)
	}
	return status
}

// Run follows the KMAC PHMAC-SHA-256 function for one whole message
// (general register 0 flags all zero), as phmac_s390.c uses it.
func (k simKMAC) Run(gr0 uint64, p *paramBlock, msg []byte) (uint8, int) {
	m := k.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs++
	const flags = gr0IKP | gr0IIMP | gr0CCUP
	if fc := gr0 & gr0FunctionMask; fc != fcPHMACSHA256 || gr0&flags != 0 || gr0&^(gr0FunctionMask|flags) != 0 {
		// The machine would raise a specification exception or compute
		// something else; 2 is no condition code KMAC ends with.
		m.refuse("general register 0 %#x, want function %#x and no flags", gr0, fcPHMACSHA256)
		return 2, len(msg)
	}
	if imbl := binary.BigEndian.Uint64(p[imblOffset:]); imbl != uint64(len(msg))*8 {
		m.refuse("imbl %d bits for a %d-byte message", imbl, len(msg))
		return 2, len(msg)
	}
	pk := p[keyOffset:]
	if !bytes.Equal(pk[hmacBlockSize:], m.wkvp[:]) {
		return ccWrappingKey, len(msg)
	}
	ks := m.keystream(hmacBlockSize)
	key := make([]byte, hmacBlockSize)
	for i := range key {
		key[i] = pk[i] ^ ks[i]
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	copy(p[:cvSize], mac.Sum(nil))
	return ccDone, 0
}
