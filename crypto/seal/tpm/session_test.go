// SPDX-License-Identifier: Apache-2.0

package tpm

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHMACSHA256MatchesCryptoHMAC(t *testing.T) {
	for keyLen := 0; keyLen <= hmacBlock; keyLen += 7 {
		for msgLen := 0; msgLen <= 128; msgLen += 13 {
			key, msg := make([]byte, keyLen), make([]byte, msgLen)
			rand.Read(key)
			rand.Read(msg)
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			if got := hmacSHA256(key, msg); !bytes.Equal(got[:], m.Sum(nil)) {
				t.Fatalf("key %d bytes, message %d bytes: differs from crypto/hmac", keyLen, msgLen)
			}
		}
	}
}

func TestKDFaMatchesGoTPM(t *testing.T) {
	for _, label := range []string{"ATH", "CFB"} {
		for _, keyLen := range []int{0, 16, 32, 64} {
			key, u, v := make([]byte, keyLen), make([]byte, nonceSize), make([]byte, nonceSize)
			rand.Read(key)
			rand.Read(u)
			rand.Read(v)
			got := kdfa(key, label, u, v)
			if want := tpm2.KDFa(crypto.SHA256, key, label, u, v, 256); !bytes.Equal(got[:], want) {
				t.Fatalf("kdfa(%d-byte key, %q) differs from tpm2.KDFa", keyLen, label)
			}
		}
	}
}

// NIST SP 800-38A, F.3.13 and F.3.14 (CFB128-AES128).
func TestCFBMatchesNISTVectors(t *testing.T) {
	key := unhex(t, "2b7e151628aed2a6abf7158809cf4f3c")
	iv := unhex(t, "000102030405060708090a0b0c0d0e0f")
	plain := unhex(t, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	cipher := unhex(t, "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6")
	for _, n := range []int{len(plain), 40, 17, 16, 5, 0} { // partial last blocks too
		b := bytes.Clone(plain[:n])
		cfb(key, iv, b, false)
		if !bytes.Equal(b, cipher[:n]) {
			t.Fatalf("encrypt %d bytes: %x, want %x", n, b, cipher[:n])
		}
		cfb(key, iv, b, true)
		if !bytes.Equal(b, plain[:n]) {
			t.Fatalf("decrypt %d bytes: %x, want %x", n, b, plain[:n])
		}
	}
}

func TestTrimZerosDropsOnlyTrailingZeros(t *testing.T) {
	for _, tt := range []struct{ in, want []byte }{
		{nil, nil},
		{[]byte{0, 0}, []byte{}},
		{[]byte{1, 0, 2}, []byte{1, 0, 2}},
		{[]byte{1, 0, 2, 0, 0}, []byte{1, 0, 2}},
		{[]byte{0, 1}, []byte{0, 1}},
	} {
		if got := trimZeros(tt.in); !bytes.Equal(got, tt.want) {
			t.Errorf("trimZeros(%x) = %x, want %x", tt.in, got, tt.want)
		}
	}
}

// trickle answers every command with a canned response, one byte per Read.
type trickle struct {
	rsp     []byte
	pending []byte
	writes  int
	failAt  int // Write number that fails, 0 for none
	closed  bool
}

func (c *trickle) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == c.failAt {
		return 0, errors.New("broken pipe")
	}
	c.pending = bytes.Clone(c.rsp)
	return len(p), nil
}

func (c *trickle) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return 0, io.EOF
	}
	p[0] = c.pending[0]
	c.pending = c.pending[1:]
	return 1, nil
}

func (c *trickle) Close() error { c.closed = true; return nil }

func TestStreamReassemblesResponsesSplitAcrossReads(t *testing.T) {
	rsp := []byte{0x80, 0x01, 0, 0, 0, 14, 0, 0, 0, 0, 1, 2, 3, 4}
	c := &trickle{rsp: rsp}
	s := NewStream(c)
	for range 3 {
		got, err := s.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b})
		if err != nil || !bytes.Equal(got, rsp) {
			t.Fatalf("Send: %x, %v; want %x", got, err, rsp)
		}
	}
	if err := s.Close(); err != nil || !c.closed {
		t.Fatalf("Close: %v", err)
	}
}

func TestStreamFailsForGoodAfterAnIOError(t *testing.T) {
	c := &trickle{rsp: []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}, failAt: 2}
	s := NewStream(c)
	cmd := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b}
	if _, err := s.Send(cmd); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(cmd); err == nil {
		t.Fatal("Send over a broken stream succeeded")
	}
	if _, err := s.Send(cmd); err == nil || c.writes != 2 {
		t.Fatalf("Send after an I/O error: %v after %d writes; want an error and no write", err, c.writes)
	}
}

func TestStreamRejectsAMalformedResponseSize(t *testing.T) {
	for _, size := range []byte{0, 9} {
		s := NewStream(&trickle{rsp: []byte{0x80, 0x01, 0, 0, 0, size, 0, 0, 0, 0}})
		if _, err := s.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b}); err == nil {
			t.Fatalf("response size %d accepted", size)
		}
	}
}
