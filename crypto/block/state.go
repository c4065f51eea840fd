// SPDX-License-Identifier: Apache-2.0

package block

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"
)

// Key is a data key prepared for sealing and opening blocks. Its AES key
// schedule, CMAC subkey and format 1 GCM state live in memory the caller
// provides (locked and non-dumpable: secmem), not in the Go heap: the
// standard library builds them in the heap, and NewKey moves them out and
// wipes what it moved. The data key itself is not kept. A Key is safe for
// concurrent use until Wipe; using it after Wipe is a bug.
type Key struct {
	gen uint32
	mem []byte
	m   master
}

// stateAlign keeps each moved object on its own cache line.
const stateAlign = 64

// stateSize is measured: the state of a zero key moved into scratch memory.
var stateSize = sync.OnceValues(func() (int, error) {
	var zero [KeySize]byte
	m, err := newMaster(zero[:])
	if err != nil {
		return 0, err
	}
	defer m.wipe()
	scratch := make([]byte, 1<<16)
	_, n, err := relocate(scratch, m.b, m.v1)
	if err != nil {
		return 0, err
	}
	return n + roundUp(len(m.k1)), nil
})

// StateSize is how much memory NewKey needs.
func StateSize() (int, error) { return stateSize() }

func roundUp(n int) int { return (n + stateAlign - 1) &^ (stateAlign - 1) }

// NewKey prepares key (KeySize bytes) for generation into mem, which must be
// at least StateSize bytes and stay mapped until Wipe. The caller wipes key
// itself.
func NewKey(key []byte, generation uint32, mem []byte) (*Key, error) {
	need, err := StateSize()
	if err != nil {
		return nil, err
	}
	if len(mem) < need {
		return nil, fmt.Errorf("block key state needs %d bytes, got %d", need, len(mem))
	}
	if a := unsafe.Alignof(unsafe.Pointer(nil)); uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%a != 0 {
		return nil, fmt.Errorf("block key state memory must be aligned to %d bytes", a)
	}
	m, err := newMaster(key)
	if err != nil {
		return nil, err
	}
	moved, off, err := relocate(mem, m.b, m.v1)
	if err != nil {
		m.wipe()
		clear(mem)
		return nil, err
	}
	k := &Key{gen: generation, mem: mem}
	k.m.b, k.m.v1 = moved[0].(cipher.Block), moved[1].(cipher.AEAD)
	k.m.k1 = (*[16]byte)(mem[off : off+16])
	*k.m.k1 = *m.k1
	clear(m.k1[:])
	return k, nil
}

// Generation is the key generation that Seal writes.
func (k *Key) Generation() uint32 { return k.gen }

// Seal encrypts plaintext for keyID and returns the block appended to dst.
func (k *Key) Seal(dst []byte, keyID string, plaintext, aad []byte) ([]byte, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	return k.m.seal(dst, k.gen, keyID, plaintext, aad)
}

// Open decrypts a block of either format for keyID and returns the plaintext
// appended to dst.
func (k *Key) Open(dst []byte, keyID string, blk, aad []byte) ([]byte, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	return k.m.open(dst, keyID, blk, aad)
}

// Wipe zeroes the key's state. The memory is the caller's again.
func (k *Key) Wipe() {
	clear(k.mem)
	k.m = master{}
}

// WipeCipher zeroes a cipher.Block or cipher.AEAD (or cipher.BlockMode)
// made by the standard library, as wipeObject does: for callers that run
// AES under a key of their own and must not leave its schedule behind.
// Wipe a mode or AEAD before the block it was made from.
func WipeCipher(x any) { wipeObject(x) }

// wipeObject zeroes the struct behind a standard library cipher value (a
// pointer to a struct) and every struct it points to, as relocate would move
// them (an s390x AES block without CPACF keeps its key schedule in a
// separate fallback struct), with the runtime's write barriers. Slices and
// strings are not followed: relocate refuses any that point outside the
// structs, so zeroing the structs zeroes what they see.
func wipeObject(x any) {
	if x == nil {
		return
	}
	v := reflect.ValueOf(x)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("block: cannot wipe a %T", x))
	}
	for _, o := range reachable(v.UnsafePointer(), v.Type().Elem()) {
		reflect.NewAt(o.t, o.p).Elem().SetZero()
	}
}

type object struct {
	p unsafe.Pointer
	t reflect.Type
}

// reachable lists the object at p and every object reachable from it through
// typed pointers, each once, the one at p last.
func reachable(p unsafe.Pointer, t reflect.Type) []object {
	seen := map[unsafe.Pointer]bool{}
	var out []object
	var walk func(p unsafe.Pointer, t reflect.Type)
	walk = func(p unsafe.Pointer, t reflect.Type) {
		if p == nil || seen[p] {
			return
		}
		seen[p] = true
		// Fields whose types it cannot follow (interfaces, maps) are left:
		// the standard library's AES and GCM have none.
		_ = pointerFields(t, 0, func(field uintptr, ft reflect.Type) error {
			if ft.Kind() == reflect.Pointer {
				walk(*(*unsafe.Pointer)(unsafe.Add(p, field)), ft.Elem())
			}
			return nil
		})
		out = append(out, object{p, t})
	}
	walk(p, t)
	return out
}

var errMove = errors.New("block: the standard library's cipher state holds a reference this package cannot move")

// relocate copies the structs behind xs (pointers) into mem, each on a
// stateAlign boundary, together with every struct they point to (the
// pointers a standard library cipher holds: an s390x AES block's key slice
// into itself, its generic fallback's key schedule), repoints every pointer
// at the copies, wipes the originals, and returns values of the same types
// pointing at the copies and the offset after them. A slice or untyped
// pointer to anything outside the moved structs is refused: it would leave
// part of the state behind, or keep heap memory alive from memory the
// collector does not scan.
func relocate(mem []byte, xs ...any) ([]any, int, error) {
	type span struct {
		from unsafe.Pointer // the original
		to   unsafe.Pointer // the copy in mem
		size uintptr
		t    reflect.Type
	}
	var spans []span
	off := 0
	add := func(from unsafe.Pointer, t reflect.Type) (span, error) {
		if off+int(t.Size()) > len(mem) {
			return span{}, fmt.Errorf("block: %d bytes of key state do not fit %d", off+int(t.Size()), len(mem))
		}
		sp := span{from: from, to: unsafe.Pointer(&mem[off]), size: t.Size(), t: t}
		copy(mem[off:off+int(t.Size())], unsafe.Slice((*byte)(from), t.Size()))
		off += roundUp(int(t.Size()))
		spans = append(spans, sp)
		return sp, nil
	}
	find := func(p uintptr) (span, bool) {
		for _, o := range spans {
			if p >= uintptr(o.from) && p < uintptr(o.from)+o.size {
				return o, true
			}
		}
		return span{}, false
	}
	fail := func(err error) ([]any, int, error) {
		clear(mem[:off])
		return nil, 0, err
	}
	for _, x := range xs {
		v := reflect.ValueOf(x)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return fail(fmt.Errorf("block: cannot move a %T", x))
		}
		if _, err := add(v.UnsafePointer(), v.Type().Elem()); err != nil {
			return fail(err)
		}
	}
	// spans grows while pointers to further structs are found.
	for i := 0; i < len(spans); i++ {
		sp := spans[i]
		err := pointerFields(sp.t, 0, func(field uintptr, t reflect.Type) error {
			at := (*unsafe.Pointer)(unsafe.Add(sp.to, field))
			if *at == nil {
				return nil
			}
			o, ok := find(uintptr(*at))
			if !ok {
				if t.Kind() != reflect.Pointer {
					return errMove
				}
				var err error
				if o, err = add(*at, t.Elem()); err != nil {
					return err
				}
			}
			*at = unsafe.Add(o.to, uintptr(*at)-uintptr(o.from))
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	for _, sp := range spans {
		reflect.NewAt(sp.t, sp.from).Elem().SetZero()
	}
	out := make([]any, len(xs))
	for i := range xs {
		out[i] = reflect.NewAt(spans[i].t, spans[i].to).Interface()
	}
	return out, off, nil
}

// pointerFields calls f with the offset and type of every pointer word in a
// value of type t (at base): pointers, and the data words of slices and
// strings. Types whose pointers it cannot follow safely are an error.
func pointerFields(t reflect.Type, base uintptr, f func(uintptr, reflect.Type) error) error {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Slice, reflect.String:
		return f(base, t)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if err := pointerFields(sf.Type, base+sf.Offset, f); err != nil {
				return err
			}
		}
	case reflect.Array:
		if t.Elem().Kind() <= reflect.Complex128 { // bool and numbers: no pointers
			return nil
		}
		for i := 0; i < t.Len(); i++ {
			if err := pointerFields(t.Elem(), base+uintptr(i)*t.Elem().Size(), f); err != nil {
				return err
			}
		}
	case reflect.Interface, reflect.Map, reflect.Chan, reflect.Func:
		return errMove
	}
	return nil
}
