// SPDX-License-Identifier: Apache-2.0

// Command libbyokd-wiredtiger is a WiredTiger encryptor extension, built with
// -buildmode=c-shared: it registers the encryptor "byokd", whose keys exist
// only while byokd is unlocked. See docs/wiredtiger.md.
package main

/*
#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include "layout.h"
*/
import "C"

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/plugin/wiredtiger/keycache"
)

func main() {}

var (
	mu       sync.Mutex
	provider *keycache.Provider
)

func current() *keycache.Provider {
	mu.Lock()
	defer mu.Unlock()
	return provider
}

// setMsg copies an error message into the shim's buffer, NUL-terminated.
func setMsg(buf *C.char, n C.int, msg string) {
	if buf == nil || n <= 0 {
		return
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n))
	k := copy(dst[:len(dst)-1], msg)
	dst[k] = 0
}

// errno is what the encryptor returns to WiredTiger for err: EACCES when
// the node is locked (or byokd unreachable), WT_ERROR for a block that does
// not open — so that salvage discards it, as it does a block that fails
// its checksum — and EIO for anything else.
func errno(err error) C.int {
	switch {
	case errors.Is(err, keycache.ErrLocked):
		return C.EACCES
	case errors.Is(err, keycache.ErrCorrupt):
		return C.BYOKD_WT_ERROR
	}
	return C.EIO
}

//export byokdInit
func byokdInit(socket, mode *C.char, msg *C.char, msglen C.int) C.int {
	mu.Lock()
	defer mu.Unlock()
	if provider != nil {
		// A second wiredtiger_open in the same process reuses the
		// connection to byokd.
		return 0
	}
	p, err := keycache.Open(C.GoString(socket), keyprovider.Mode(C.GoString(mode)))
	if err != nil {
		setMsg(msg, msglen, err.Error())
		return C.EACCES
	}
	provider = p
	return 0
}

//export byokdCustomize
func byokdCustomize(keyid *C.char, n C.size_t, msg *C.char, msglen C.int) C.int {
	p := current()
	if p == nil {
		setMsg(msg, msglen, "byokd: extension not initialised")
		return -C.EINVAL
	}
	h, err := p.Customize(C.GoStringN(keyid, C.int(n)))
	if err != nil {
		setMsg(msg, msglen, err.Error())
		return -errno(err)
	}
	return C.int(h)
}

func bytesOf(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

//export byokdEncrypt
func byokdEncrypt(h C.int, src *C.uint8_t, srcLen C.size_t, dst *C.uint8_t, dstLen C.size_t, result *C.size_t, msg *C.char, msglen C.int) C.int {
	p := current()
	if p == nil || h == 0 {
		setMsg(msg, msglen, "byokd: encryption=(name=byokd) needs a keyid")
		return C.EINVAL
	}
	n, err := p.Encrypt(int(h), bytesOf(src, srcLen), bytesOf(dst, dstLen))
	if err != nil {
		setMsg(msg, msglen, err.Error())
		return errno(err)
	}
	*result = C.size_t(n)
	return 0
}

//export byokdDecrypt
func byokdDecrypt(h C.int, src *C.uint8_t, srcLen C.size_t, dst *C.uint8_t, dstLen C.size_t, result *C.size_t, msg *C.char, msglen C.int) C.int {
	p := current()
	if p == nil || h == 0 {
		setMsg(msg, msglen, "byokd: encryption=(name=byokd) needs a keyid")
		return C.EINVAL
	}
	n, err := p.Decrypt(int(h), bytesOf(src, srcLen), bytesOf(dst, dstLen))
	if err != nil {
		setMsg(msg, msglen, err.Error())
		return errno(err)
	}
	*result = C.size_t(n)
	return 0
}

//export byokdRelease
func byokdRelease(h C.int) {
	if p := current(); p != nil {
		p.Release(int(h))
	}
}

//export byokdOverhead
func byokdOverhead() C.int { return C.int(block.Overhead) }
