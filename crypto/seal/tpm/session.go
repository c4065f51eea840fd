// SPDX-License-Identifier: Apache-2.0

package tpm

import (
	"context"
	"crypto/aes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/byokd/byokd/crypto/secmem"
)

// The commands that carry secrets (TPM2_Create with the DEK, TPM2_HMAC with a
// data key in its answer) and TPM2_Load are built here, byte by byte, in the
// sealer's mlocked buffer rather than by go-tpm: go-tpm marshals parameters
// through heap buffers it never clears, and its HMAC sessions keep the auth
// value in heap slices. One salted HMAC session (TPM 2.0 Part 1, 19.6 and
// 21) authorises them all:
//   - the first command parameter of TPM2_Create (the DEK and the object's
//     auth value) and the first response parameter of TPM2_HMAC (the data
//     key) travel AES-128-CFB encrypted, so nothing secret crosses the bus
//     or the resource manager in the clear;
//   - the command HMAC covers the object's Name, so if our handle ever
//     points at another object (after a TPM reset) the TPM refuses rather
//     than answering with another key;
//   - the response HMAC is checked, so a data key that did not come from our
//     object is never returned.

// nonceSize is the size of our nonceCaller and so of the TPM's nonceTPM.
const nonceSize = sha256.Size

// authAreaSize is the size of the one TPMS_AUTH_COMMAND in every command we
// build: session handle, nonceCaller (TPM2B), attributes, HMAC (TPM2B).
const authAreaSize = 4 + 2 + nonceSize + 1 + 2 + sha256.Size

// paramsAt is where the parameters start in a command with one handle and
// one authorization: header, handle, authorizationSize, the authorization.
const paramsAt = 10 + 4 + 4 + authAreaSize

// TPMA_SESSION bits.
const (
	attrContinue = 0x01 // keep the session after the command
	attrDecrypt  = 0x20 // the first command parameter is encrypted
	attrEncrypt  = 0x40 // the first response parameter is encrypted
)

const (
	tagSessions = 0x8002 // TPM_ST_SESSIONS
	algSHA256   = 0x000B // TPM_ALG_SHA256
)

// entity is what a command's one authorization is for.
type entity struct {
	handle tpm2.TPMHandle
	name   []byte // the TPM2B_NAME's buffer
	auth   []byte // authValue without trailing zeros (the TPM drops them), may be empty
}

// reply is a successful response.
type reply struct {
	handle tpm2.TPMHandle // the response handle, when the command returns one
	params []byte         // the parameter area, first parameter decrypted
}

// retries bounds how often a command is sent again when the TPM answers
// with a warning that asks for it (TPM_RC_RETRY, _YIELDED, _TESTING).
const retries = 10

// authorized sends the command built in s.cmd() — parameters already written
// at paramsAt, paramsLen bytes — with our session authorising e, and checks
// the answer. It encrypts the first parameter in place when attrs has
// attrDecrypt and decrypts the first response parameter when it has
// attrEncrypt. The command buffer is wiped before it returns. s.sem must
// be held; the caller wipes reply.params once done with it.
func (s *Sealer) authorized(ctx context.Context, cc tpm2.TPMCC, e entity, attrs byte, paramsLen, rspHandles int) (reply, error) {
	cmd := s.cmd()
	end := paramsAt + paramsLen
	defer secmem.Wipe(cmd[:end])
	params := cmd[paramsAt:end]

	var key [2 * sha256.Size]byte // sessionValue: sessionKey || authValue
	defer secmem.Wipe(key[:])
	n := copy(key[:], s.sessionKey())
	n += copy(key[n:], e.auth)
	sessionValue := key[:n]

	rand.Read(s.nonceCaller[:]) // never fails (Go 1.24)
	if attrs&attrDecrypt != 0 {
		p, err := first2B(params)
		if err != nil {
			return reply{}, fmt.Errorf("encrypt the first parameter: %w", err)
		}
		paramCrypt(sessionValue, s.nonceCaller[:], s.nonceTPM[:], p, false)
	}

	// cpHash = H(commandCode || Name || parameters)
	h := sha256.New()
	var u32 [4]byte
	binary.BigEndian.PutUint32(u32[:], uint32(cc))
	h.Write(u32[:])
	h.Write(e.name)
	h.Write(params)
	var cpHash [sha256.Size]byte
	h.Sum(cpHash[:0])
	mac := sessionHMAC(sessionValue, cpHash[:], s.nonceCaller[:], s.nonceTPM[:], attrs)

	binary.BigEndian.PutUint16(cmd[0:], tagSessions)
	binary.BigEndian.PutUint32(cmd[2:], uint32(end))
	binary.BigEndian.PutUint32(cmd[6:], uint32(cc))
	binary.BigEndian.PutUint32(cmd[10:], uint32(e.handle))
	binary.BigEndian.PutUint32(cmd[14:], authAreaSize)
	a := cmd[18:paramsAt]
	binary.BigEndian.PutUint32(a[0:], uint32(s.sess))
	binary.BigEndian.PutUint16(a[4:], nonceSize)
	copy(a[6:], s.nonceCaller[:])
	a[6+nonceSize] = attrs
	binary.BigEndian.PutUint16(a[7+nonceSize:], sha256.Size)
	copy(a[9+nonceSize:], mac[:])

	rsp, err := s.send(ctx, cmd[:end])
	if err != nil {
		return reply{}, err
	}
	r, err := s.check(rsp, cc, attrs, sessionValue, rspHandles)
	if err != nil {
		secmem.Wipe(rsp)
		return reply{}, err
	}
	return r, nil
}

// send sends cmd, again when the TPM asks for it, and returns the response
// if its code is success; otherwise the code as a tpm2.TPMRC.
func (s *Sealer) send(ctx context.Context, cmd []byte) ([]byte, error) {
	for try := 0; ; try++ {
		rsp, err := s.tpm.Send(cmd)
		if err != nil {
			return nil, err
		}
		if len(rsp) < 10 {
			return nil, fmt.Errorf("tpm response of %d bytes is shorter than its header", len(rsp))
		}
		rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:]))
		switch rc {
		case tpm2.TPMRCSuccess:
			return rsp, nil
		case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
			// The command was not executed: the session's nonces did not
			// move, so the very same bytes are valid again.
			if try < retries {
				select {
				case <-time.After(time.Millisecond << try):
					continue
				case <-ctx.Done():
					return nil, fmt.Errorf("%w (waiting to retry after %w)", ctx.Err(), rc)
				}
			}
		}
		return nil, rc
	}
}

// check parses a successful response to a command sent by authorized,
// verifies the TPM's HMAC over it, moves the session on to the new nonceTPM
// and decrypts the first parameter if it was encrypted.
func (s *Sealer) check(rsp []byte, cc tpm2.TPMCC, attrs byte, sessionValue []byte, rspHandles int) (reply, error) {
	var r reply
	if binary.BigEndian.Uint16(rsp[0:]) != tagSessions || int(binary.BigEndian.Uint32(rsp[2:])) != len(rsp) {
		return r, errors.New("malformed tpm response header")
	}
	b := rsp[10:]
	if len(b) < 4*rspHandles+4 {
		return r, errors.New("tpm response too short")
	}
	if rspHandles == 1 {
		r.handle = tpm2.TPMHandle(binary.BigEndian.Uint32(b))
	}
	b = b[4*rspHandles:]
	size := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(size) > uint64(len(b)) {
		return r, errors.New("tpm response parameter size is larger than the response")
	}
	params, b := b[:size], b[size:]
	// TPMS_AUTH_RESPONSE: nonceTPM, sessionAttributes, hmac.
	if len(b) != 2+nonceSize+1+2+sha256.Size ||
		binary.BigEndian.Uint16(b) != nonceSize ||
		binary.BigEndian.Uint16(b[3+nonceSize:]) != sha256.Size {
		return r, errors.New("malformed tpm response authorization")
	}
	nonceTPM := b[2 : 2+nonceSize]
	rspAttrs := b[2+nonceSize]
	mac := b[5+nonceSize:]

	// rpHash = H(responseCode || commandCode || parameters)
	h := sha256.New()
	var hdr [8]byte // response code 0 (success), command code
	binary.BigEndian.PutUint32(hdr[4:], uint32(cc))
	h.Write(hdr[:])
	h.Write(params)
	var rpHash [sha256.Size]byte
	h.Sum(rpHash[:0])
	want := sessionHMAC(sessionValue, rpHash[:], nonceTPM, s.nonceCaller[:], rspAttrs)
	if !hmac.Equal(want[:], mac) {
		return r, errors.New("tpm response failed the session's HMAC check")
	}
	if rspAttrs&attrContinue == 0 {
		return r, errors.New("tpm closed the session")
	}
	copy(s.nonceTPM[:], nonceTPM)
	if attrs&attrEncrypt != 0 {
		p, err := first2B(params)
		if err != nil {
			return r, fmt.Errorf("decrypt the first response parameter: %w", err)
		}
		paramCrypt(sessionValue, s.nonceTPM[:], s.nonceCaller[:], p, true)
	}
	r.params = params
	return r, nil
}

// first2B returns the contents of the TPM2B at the start of p.
func first2B(p []byte) ([]byte, error) {
	if len(p) < 2 {
		return nil, errors.New("no sized buffer")
	}
	n := int(binary.BigEndian.Uint16(p))
	if 2+n > len(p) {
		return nil, errors.New("sized buffer overruns the parameters")
	}
	return p[2 : 2+n], nil
}

// put2B writes v as a TPM2B at b and returns the bytes written.
func put2B(b, v []byte) int {
	binary.BigEndian.PutUint16(b, uint16(len(v)))
	return 2 + copy(b[2:], v)
}

// sessionKeyFromSalt is the sessionKey of an unbound salted session:
// KDFa(SHA-256, salt, "ATH", nonceTPM, nonceCaller, 256).
func sessionKeyFromSalt(salt, nonceTPM, nonceCaller []byte) [sha256.Size]byte {
	return kdfa(salt, "ATH", nonceTPM, nonceCaller)
}

// sessionHMAC is a command or response authorization: HMAC(sessionValue,
// pHash || nonceNewer || nonceOlder || sessionAttributes).
func sessionHMAC(sessionValue, pHash, newer, older []byte, attrs byte) [sha256.Size]byte {
	var msg [sha256.Size + 2*nonceSize + 1]byte
	n := copy(msg[:], pHash)
	n += copy(msg[n:], newer)
	n += copy(msg[n:], older)
	msg[n] = attrs
	return hmacSHA256(sessionValue, msg[:n+1])
}

// paramCrypt en- or decrypts p in place with AES-128-CFB, key and IV from
// KDFa(SHA-256, sessionValue, "CFB", newer, older, 256) (Part 1, 21.3).
func paramCrypt(sessionValue, newer, older, p []byte, decrypt bool) {
	kiv := kdfa(sessionValue, "CFB", newer, older)
	cfb(kiv[:16], kiv[16:], p, decrypt)
	secmem.Wipe(kiv[:])
}

// kdfa is SP 800-108 KDF in counter mode with HMAC-SHA256 as the TPM
// specifies it (Part 1, 11.4.10.2), for one 256-bit block:
// HMAC(key, 1 || label || 0 || contextU || contextV || 256).
func kdfa(key []byte, label string, contextU, contextV []byte) [sha256.Size]byte {
	var msg [4 + 4 + 2*nonceSize + 4]byte
	binary.BigEndian.PutUint32(msg[0:], 1)
	n := 4 + copy(msg[4:], label)
	msg[n] = 0
	n++
	n += copy(msg[n:], contextU)
	n += copy(msg[n:], contextV)
	binary.BigEndian.PutUint32(msg[n:], 256)
	return hmacSHA256(key, msg[:n+4])
}

// cfb en- or decrypts p in place with AES-CFB (128-bit segments), as TPM
// parameter encryption does. crypto/cipher's CFB is deprecated; this is the
// whole of the mode.
func cfb(key, iv, p []byte, decrypt bool) {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("tpm: aes key of " + fmt.Sprint(len(key)) + " bytes") // key is always 16 bytes here
	}
	var reg, ks [aes.BlockSize]byte
	copy(reg[:], iv)
	for len(p) > 0 {
		block.Encrypt(ks[:], reg[:])
		n := min(len(p), aes.BlockSize)
		if decrypt {
			copy(reg[:], p[:n]) // the ciphertext feeds back
		}
		subtle.XORBytes(p[:n], p[:n], ks[:n])
		if !decrypt {
			copy(reg[:], p[:n])
		}
		p = p[n:]
	}
	secmem.Wipe(ks[:])
	secmem.Wipe(reg[:])
}

const hmacBlock = 64

// hmacSHA256 is HMAC-SHA256 for a key of at most one block and a short
// message, with the padded key blocks in stack arrays that are wiped before
// it returns: crypto/hmac keeps key^ipad and key^opad in heap buffers it
// never clears (the reason crypto/datakey writes HMAC out too).
func hmacSHA256(key, msg []byte) [sha256.Size]byte {
	if len(key) > hmacBlock || len(msg) > 128 {
		panic("tpm: hmacSHA256 input too long") // all callers pass fixed, small sizes
	}
	var in [hmacBlock + 128]byte
	for i := range hmacBlock {
		k := byte(0)
		if i < len(key) {
			k = key[i]
		}
		in[i] = k ^ 0x36
	}
	n := hmacBlock + copy(in[hmacBlock:], msg)
	inner := sha256.Sum256(in[:n])
	secmem.Wipe(in[:hmacBlock])
	var outer [hmacBlock + sha256.Size]byte
	for i := range hmacBlock {
		k := byte(0)
		if i < len(key) {
			k = key[i]
		}
		outer[i] = k ^ 0x5c
	}
	copy(outer[hmacBlock:], inner[:])
	sum := sha256.Sum256(outer[:])
	secmem.Wipe(outer[:])
	return sum
}

// trimZeros drops trailing zero bytes, as the TPM does to an authValue
// before it uses it (Part 1, 19.6.4.3); go-tpm v0.9.8 cuts at the first zero
// byte instead, one reason this package does not use its sessions.
func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
