// SPDX-License-Identifier: Apache-2.0

package block

import "crypto/cipher"

// cmacSubkey computes CMAC's K1 for b (NIST SP 800-38B): L = AES_K(0^128),
// K1 = L << 1, xored with 0x87 when L's top bit was set.
func cmacSubkey(b cipher.Block, k1 *[16]byte) {
	var l [16]byte
	b.Encrypt(l[:], l[:])
	msb := l[0] >> 7
	for i := 0; i < 15; i++ {
		k1[i] = l[i]<<1 | l[i+1]>>7
	}
	k1[15] = l[15]<<1 ^ 0x87*msb
	clear(l[:])
}

// deriveBlockKey is XAES-256-GCM's key derivation (c2sp.org/XAES-256-GCM):
// with M_i = 0x00 || i || "X" || 0x00 || nonce[:12], the key is
// AES_K(M_1 xor K1) || AES_K(M_2 xor K1), a counter-mode CMAC KDF whose
// inputs are a single complete block each.
func deriveBlockKey(b cipher.Block, k1 *[16]byte, nonce []byte, out *[KeySize]byte) {
	var m [16]byte
	m[2] = 'X'
	copy(m[4:], nonce[:12])
	for i := byte(1); i <= 2; i++ {
		m[1] = i
		var x [16]byte
		for j := range x {
			x[j] = m[j] ^ k1[j]
		}
		b.Encrypt(out[16*(i-1):16*i], x[:])
		clear(x[:])
	}
}
