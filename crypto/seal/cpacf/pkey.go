// SPDX-License-Identifier: Apache-2.0

package cpacf

import (
	"encoding/binary"
	"errors"
	"syscall"
	"unsafe"
)

// The Linux s390 pkey device, /dev/pkey: the uapi is
// arch/s390/include/uapi/asm/pkey.h. What is used here is checked against
// the installed header by TestHeaderMatchesGolden and against the Go
// layout by TestGoLayoutMatchesGolden.
//
// Why PKEY_KBLOB2PROTK3 and not PKEY_CLR2PROTK: CLR2PROTK carries the clear
// key in struct pkey_clrkey (MAXCLRKEYSIZE, 32 bytes) and returns it in
// struct pkey_protkey (MAXPROTKEYSIZE, 64 bytes), and the kernel accepts
// only AES key types there (pkey_keytype_aes_to_size in
// drivers/s390/crypto/pkey_api.c). An HMAC-SHA-256 protected key is the
// 64-byte block key plus a 32-byte wrapping-key verification pattern, 96
// bytes. The kernel makes one from a "clear key token" passed to
// PKEY_KBLOB2PROTK3, the same token the kernel's own phmac driver builds
// (make_clrkey_token in arch/s390/crypto/phmac_s390.c), and that ioctl
// returns the protected key in a caller-sized buffer. PKEY_VERIFYPROTK is
// AES-only for the same reasons, so a protected HMAC key is checked with a
// known-answer test through the instruction instead (see Sealer.protect).
const (
	pkeyPath = "/dev/pkey"

	pkeyIoctlMagic = 'p'
	nrKBlob2Protk3 = 0x1d

	// keyTypeHMAC512 is PKEY_KEYTYPE_HMAC_512: an HMAC key for SHA-224 and
	// SHA-256, whose block is 512 bits. It is not in Debian 12's
	// linux-libc-dev 6.1 header; the value is from the upstream uapi header
	// (torvalds/linux arch/s390/include/uapi/asm/pkey.h, with
	// PKEY_KEYTYPE_HMAC_1024 = 13) and matches s390-tools' zkey/pkey.h.
	keyTypeHMAC512 = 12

	// tokTypeNonCCA and tokVerClearKey are the kernel-internal
	// TOKTYPE_NON_CCA and TOKVER_CLEAR_KEY (drivers/s390/crypto/
	// zcrypt_ccamisc.h, pkey_base.h); the token is not in the uapi header.
	tokTypeNonCCA  = 0x00
	tokVerClearKey = 0x02

	// hmacBlockSize is the SHA-256 block, the size of the clear HMAC key
	// the firmware wraps; shorter keys are zero-padded, as in RFC 2104.
	hmacBlockSize = 64
	// wkvpSize is the wrapping-key verification pattern CPACF appends to
	// every protected key (AES_WK_VP_SIZE in the kernel).
	wkvpSize = 32
	// protKeySize is the size of an HMAC_512 protected key.
	protKeySize = hmacBlockSize + wkvpSize

	// tokenHeaderSize is the clear key token without its key: type,
	// res0[3], version, res1[3], keytype, len.
	tokenHeaderSize = 16
	// tokenSize is the clear key token for an HMAC_512 key.
	tokenSize = tokenHeaderSize + hmacBlockSize
)

// ioctl request encoding of asm-generic/ioctl.h, which s390 uses: 8 bits of
// number, 8 of type, 14 of size and 2 of direction.
const (
	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	iocWrite = 1
	iocRead  = 2
)

// kblob2pkey3 is struct pkey_kblob2pkey3. The padding is explicit so the
// layout is the C one on every 64-bit target; the tests compare offsets with
// the header.
type kblob2pkey3 struct {
	key         *byte  // in: the key blob
	keylen      uint32 // in: its size
	_           [4]byte
	apqns       *byte  // in: struct pkey_apqn list; none for a clear key token
	apqnEntries uint32 // in
	pkeytype    uint32 // out: the protected key's type
	pkeylen     uint32 // in: size of the pkey buffer; out: size of the protected key
	_           [4]byte
	pkey        *byte // in: buffer for the protected key
}

// kblob2protk3 is PKEY_KBLOB2PROTK3, _IOWR('p', 0x1d, struct
// pkey_kblob2pkey3): 0xc030701d on 64-bit targets.
const kblob2protk3 = (iocRead|iocWrite)<<iocDirShift | pkeyIoctlMagic<<iocTypeShift |
	nrKBlob2Protk3<<iocNRShift | unsafe.Sizeof(kblob2pkey3{})<<iocSizeShift

// putClearKeyToken writes into dst (tokenSize bytes) the clear key token
// that asks the pkey device for an HMAC_512 protected key of key, which must
// be at most hmacBlockSize bytes; it is zero-padded to the block. The token's
// integers are big-endian because the pkey device exists only on s390x.
func putClearKeyToken(dst, key []byte) {
	if len(dst) != tokenSize || len(key) > hmacBlockSize {
		panic("cpacf: clear key token of the wrong size")
	}
	clear(dst)
	dst[0] = tokTypeNonCCA
	dst[4] = tokVerClearKey
	binary.BigEndian.PutUint32(dst[8:], keyTypeHMAC512)
	binary.BigEndian.PutUint32(dst[12:], hmacBlockSize)
	copy(dst[tokenHeaderSize:], key)
}

// device is the pkey device. Its one call is PKEY_KBLOB2PROTK3; tests use
// a simulation.
type device interface {
	// ProtectKey turns the key blob into a protected key, written to out,
	// and returns its length and pkey key type. Errors are syscall.Errno
	// values, as the kernel returned them.
	ProtectKey(blob, out []byte) (n int, keyType uint32, err error)
	// Close releases the device.
	Close() error
}

// errnoReason explains the errors that mean this kernel or machine cannot
// make HMAC protected keys, so the backend is unavailable rather than
// failing. It returns "" for other errors.
func errnoReason(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case syscall.ENOENT, syscall.ENXIO:
		return "no pkey device (not s390x, or the pkey module is not loaded)"
	case syscall.EACCES, syscall.EPERM:
		return "the pkey device may not be opened (permissions or the unit's DevicePolicy)"
	case syscall.ENOTTY:
		return "the kernel has no PKEY_KBLOB2PROTK3"
	case syscall.EINVAL:
		return "the kernel does not know HMAC protected keys (PKEY_KEYTYPE_HMAC_512)"
	case syscall.ENODEV, syscall.EOPNOTSUPP:
		return "the kernel or machine cannot make HMAC protected keys (PCKMO HMAC function or the pkey_pckmo module missing)"
	}
	return ""
}
