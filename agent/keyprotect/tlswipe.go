// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"reflect"
	"unsafe"
)

// wipeTLSReadBuffers zeroes the record buffers of a finished TLS
// connection. crypto/tls decrypts each record in place in its rawInput
// buffer and keeps it there after the application has read it, so the
// clear answer of an unwrap would otherwise stay in the heap until the
// buffer is reused. The buffers are unexported; they are reached through
// reflection, and TestTLSReadBuffersAreWiped fails when a Go release
// renames them. Call it only after the connection is closed.
func wipeTLSReadBuffers(c *tls.Conn) error {
	v := reflect.ValueOf(c).Elem()
	var errs []error
	for _, name := range []string{"rawInput", "hand"} {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Type() != reflect.TypeFor[bytes.Buffer]() {
			errs = append(errs, errors.New("crypto/tls.Conn has no bytes.Buffer "+name))
			continue
		}
		b := (*bytes.Buffer)(unsafe.Pointer(f.UnsafeAddr()))
		b.Reset()
		all := b.AvailableBuffer()
		clear(all[:cap(all)])
	}
	if f := v.FieldByName("input"); f.IsValid() && f.Type() == reflect.TypeFor[bytes.Reader]() {
		(*bytes.Reader)(unsafe.Pointer(f.UnsafeAddr())).Reset(nil)
	} else {
		errs = append(errs, errors.New("crypto/tls.Conn has no bytes.Reader input"))
	}
	return errors.Join(errs...)
}
