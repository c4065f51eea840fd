// SPDX-License-Identifier: Apache-2.0

package cpacf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/secmem"
)

// The CPACF KMAC instruction (COMPUTE MESSAGE AUTHENTICATION CODE, opcode
// 0xb91e) with function code 0x79, HMAC-SHA-256 with an encrypted
// (protected) key. The function code, the general register 0 flags and the
// parameter block are those of the kernel's phmac driver
// (arch/s390/crypto/phmac_s390.c, CPACF_KMAC_PHMAC_SHA_256 in
// arch/s390/include/asm/cpacf.h).
const (
	fcPHMACSHA256   = 0x79
	gr0FunctionMask = 0x7f
	// gr0IKP, gr0IIMP and gr0CCUP are the general register 0 flags
	// (intermediate key present, intermediate message part, chaining value
	// update): one call over the whole message leaves all three zero, so
	// the instruction pads the message itself using imbl and computes the
	// outer hash.
	gr0IKP  = 1 << 15
	gr0IIMP = 1 << 14
	gr0CCUP = 1 << 13

	// The parameter block for the SHA-256 functions: the chaining value,
	// which holds the MAC when the instruction ends; the message length in
	// bits, big-endian; the protected key.
	cvSize     = 32
	imblOffset = cvSize
	keyOffset  = imblOffset + 8
	paramSize  = keyOffset + protKeySize

	// Condition codes Run returns: 0 done, 1 the protected key's
	// wrapping-key verification pattern does not match the firmware's
	// wrapping key. Code 3, partial completion, never reaches Go: the
	// assembly resumes the instruction.
	ccDone        = 0
	ccWrappingKey = 1
)

// paramBlock is the KMAC parameter block for PHMAC-SHA-256.
type paramBlock [paramSize]byte

// kmacer runs the KMAC instruction. On s390x it is the instruction itself,
// two lines of assembly; tests use a simulation.
type kmacer interface {
	// Query runs KMAC's query function and returns the 16-byte status
	// word: bit n, counting from the left, is set when function code n is
	// installed.
	Query() [16]byte
	// Run runs KMAC with general register 0 set to gr0 over msg, resuming
	// it after partial completion, and returns the final condition code and
	// how many bytes of msg were left unprocessed.
	Run(gr0 uint64, param *paramBlock, msg []byte) (cc uint8, left int)
}

// installed reports whether function code fc is set in a query status word.
func installed(status [16]byte, fc int) bool {
	return status[fc>>3]&(0x80>>(fc&7)) != 0
}

// errWrappingKeyChanged is returned by phmac when the protected key no
// longer matches the firmware wrapping key.
var errWrappingKeyChanged = errors.New("firmware wrapping key changed")

// phmac writes HMAC-SHA-256(K, info || 0x01) into out (32 bytes), where K is
// the key inside the protected key pk: the one block of HKDF-Expand-SHA256
// that datakey.Derive computes in software. info is at most
// datakey.MaxInfoLen bytes.
func phmac(k kmacer, pk, info, out []byte) error {
	if len(pk) != protKeySize || len(out) != datakey.Size || len(info) > datakey.MaxInfoLen {
		return fmt.Errorf("phmac: protected key %d, info %d, out %d bytes", len(pk), len(info), len(out))
	}
	var p paramBlock
	// The parameter block ends up holding the MAC, a data key, next to
	// the protected key: wipe it whatever happens. Passed through the
	// kmacer interface it is allocated on the heap; Go's collector does not
	// move objects, so the wipe leaves no copy behind. The message is not
	// secret.
	defer secmem.Wipe(p[:])
	copy(p[keyOffset:], pk)
	var msg [datakey.MaxInfoLen + 1]byte
	n := copy(msg[:], info)
	msg[n] = 0x01
	n++
	binary.BigEndian.PutUint64(p[imblOffset:], uint64(n)*8)

	cc, left := k.Run(fcPHMACSHA256, &p, msg[:n])
	switch {
	case cc == ccWrappingKey:
		return errWrappingKeyChanged
	case cc != ccDone || left != 0:
		return fmt.Errorf("kmac ended with condition code %d and %d of %d bytes unprocessed", cc, left, n)
	}
	copy(out, p[:cvSize])
	return nil
}
