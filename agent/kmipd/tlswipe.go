// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"

	"github.com/byokd/byokd/crypto/secmem"
)

// crypto/tls decrypts records in place in a connection's record buffer
// (tls.Conn.rawInput, a bytes.Buffer) and hands out the plaintext through
// tls.Conn.input, a bytes.Reader over the same memory. The plaintext of the
// last request read (a Register carries a database's master key) stays
// there until the next record overwrites it, and after the connection ends
// until the runtime reuses the memory. byokd wipes it: the offsets of the
// two fields are found once; if this Go's crypto/tls lacks them, nothing is
// wiped and TestTLSRecordBufferIsFound fails.
var tlsFields = func() (f struct {
	ok            bool
	rawInput, inp uintptr
}) {
	t := reflect.TypeFor[tls.Conn]()
	raw, ok1 := t.FieldByName("rawInput")
	in, ok2 := t.FieldByName("input")
	if !ok1 || !ok2 || raw.Type != reflect.TypeFor[bytes.Buffer]() || in.Type != reflect.TypeFor[bytes.Reader]() {
		return f
	}
	f.ok, f.rawInput, f.inp = true, raw.Offset, in.Offset
	return f
}()

func rawInput(tc *tls.Conn) *bytes.Buffer {
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(tc), tlsFields.rawInput))
}

func input(tc *tls.Conn) *bytes.Reader {
	return (*bytes.Reader)(unsafe.Add(unsafe.Pointer(tc), tlsFields.inp))
}

// tlsInputIdle reports whether the connection has no buffered input, read
// or not yet decrypted, so that wiping its record buffer loses nothing.
// Only the goroutine that reads may call it.
func tlsInputIdle(tc *tls.Conn) bool {
	return tlsFields.ok && rawInput(tc).Len() == 0 && input(tc).Len() == 0
}

// wipeTLSInput zeroes the whole record buffer of a TLS connection whose
// input is idle or that is done. Only the goroutine that reads may call it.
func wipeTLSInput(tc *tls.Conn) {
	if !tlsFields.ok {
		return
	}
	b := rawInput(tc)
	b.Reset()
	full := b.Bytes()
	secmem.Wipe(full[:cap(full)])
}
