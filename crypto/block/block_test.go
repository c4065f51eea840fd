// SPDX-License-Identifier: Apache-2.0

package block

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
	"unsafe"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestSealOpenRoundTripAndExactOverhead(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 1 << 20} {
		pt := bytes.Repeat([]byte{'x'}, n)
		blk, err := Seal(nil, key(1), 7, "table:t", pt, []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		if len(blk) != n+Overhead {
			t.Fatalf("len %d, want %d", len(blk), n+Overhead)
		}
		if g, _ := Generation(blk); g != 7 {
			t.Fatalf("generation %d", g)
		}
		got, err := Open(nil, key(1), "table:t", blk, []byte("aad"))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("open: %v", err)
		}
	}
}

func TestBlockDoesNotOpenElsewhere(t *testing.T) {
	blk, err := Seal(nil, key(1), 1, "table:a", []byte("secret rows"), nil)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(blk)
		b[i] ^= 0x80
		return b
	}
	cases := map[string]struct {
		key   []byte
		keyID string
		blk   []byte
		aad   []byte
	}{
		"other key id":        {key(1), "table:b", blk, nil},
		"other key":           {key(2), "table:a", blk, nil},
		"other aad":           {key(1), "table:a", blk, []byte("x")},
		"tampered version":    {key(1), "table:a", flip(0), nil},
		"tampered generation": {key(1), "table:a", flip(2), nil},
		"tampered nonce":      {key(1), "table:a", flip(8), nil},
		"tampered body":       {key(1), "table:a", flip(HeaderSize), nil},
		"tampered tag":        {key(1), "table:a", flip(len(blk) - 1), nil},
		"truncated":           {key(1), "table:a", blk[:len(blk)-1], nil},
		"too short":           {key(1), "table:a", blk[:Overhead-1], nil},
		"empty":               {key(1), "table:a", nil, nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			pt, err := Open(nil, c.key, c.keyID, c.blk, c.aad)
			if !errors.Is(err, ErrOpen) || pt != nil {
				t.Fatalf("want ErrOpen and no plaintext, got %q %v", pt, err)
			}
		})
	}
}

func TestBadKeyAndKeyIDAreErrors(t *testing.T) {
	if _, err := Seal(nil, make([]byte, 16), 1, "k", nil, nil); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
	if _, err := Seal(nil, key(1), 1, "", nil, nil); err == nil {
		t.Fatal("an empty key id was accepted")
	}
	if _, err := Seal(nil, key(1), 1, string(make([]byte, 256)), nil, nil); err == nil {
		t.Fatal("a 256-byte key id was accepted")
	}
}

// A format 1 block, sealed by byokd 0.1's block.Seal (key 0x01 x 32,
// generation 7, key id "table:t", no additional data): databases written
// before format 2 must keep reading.
const v1Block = "0100000007c23af1e0a04e73327780f49d9463927b883e0eb949ba7af4a9ba7821fda65852acd64d0b23cf2a2ae3999ddbf1b4297e8563adb99fe0536cd6d166a4456e1fd0100752"

func TestOpensFormat1Blocks(t *testing.T) {
	blk, _ := hex.DecodeString(v1Block)
	want := "a block written by byokd 0.x (format 1)"
	got, err := Open(nil, key(1), "table:t", blk, nil)
	if err != nil || string(got) != want {
		t.Fatalf("format 1 block: %q, %v", got, err)
	}
	if g, err := Generation(blk); err != nil || g != 7 {
		t.Fatalf("generation %d, %v", g, err)
	}
	if n, err := PlaintextLen(blk); err != nil || n != len(want) {
		t.Fatalf("format 1 PlaintextLen %d, %v; want %d", n, err, len(want))
	}
	// A format 1 block of an empty plaintext is 33 bytes: shorter than
	// format 2's overhead, and still a block.
	if n, err := PlaintextLen(blk[:33]); err != nil || n != 0 {
		t.Fatalf("33-byte format 1 block: PlaintextLen %d, %v", n, err)
	}
	for _, b := range [][]byte{blk[:32], append([]byte{3}, blk[1:]...), nil} {
		if _, err := PlaintextLen(b); !errors.Is(err, ErrOpen) {
			t.Fatalf("PlaintextLen of %d bytes starting %x: %v, want ErrOpen", len(b), b[:min(len(b), 1)], err)
		}
	}
	f2, err := Seal(nil, key(1), 1, "table:t", []byte("abc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := PlaintextLen(f2); err != nil || n != 3 {
		t.Fatalf("format 2 PlaintextLen %d, %v", n, err)
	}
	mem := make([]byte, mustStateSize(t))
	k, err := NewKey(key(1), 1, mem)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Open(nil, "table:t", blk, nil); err != nil || string(got) != want {
		t.Fatalf("format 1 block through a Key: %q, %v", got, err)
	}
	for _, i := range []int{0, 3, 10, 20, len(blk) - 1} {
		b := bytes.Clone(blk)
		b[i] ^= 0x40
		if _, err := Open(nil, key(1), "table:t", b, nil); !errors.Is(err, ErrOpen) {
			t.Fatalf("tampered format 1 block (byte %d) opened: %v", i, err)
		}
	}
}

// TestXAESVectors checks the per-block key derivation and GCM against the
// C2SP XAES-256-GCM test vectors.
func TestXAESVectors(t *testing.T) {
	for _, v := range []struct{ key, nonce, pt, aad, ct string }{
		{"0101010101010101010101010101010101010101010101010101010101010101", "ABCDEFGHIJKLMNOPQRSTUVWX", "XAES-256-GCM", "",
			"ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"},
		{"0303030303030303030303030303030303030303030303030303030303030303", "ABCDEFGHIJKLMNOPQRSTUVWX", "XAES-256-GCM", "c2sp.org/XAES-256-GCM",
			"986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"},
	} {
		k, _ := hex.DecodeString(v.key)
		m, err := newMaster(k)
		if err != nil {
			t.Fatal(err)
		}
		g, wipe, err := m.blockGCM([]byte(v.nonce))
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(g.Seal(nil, []byte(v.nonce)[12:], []byte(v.pt), []byte(v.aad))); got != v.ct {
			t.Errorf("key %s..: %s, want %s", v.key[:4], got, v.ct)
		}
		wipe()
		m.wipe()
	}
}

func mustStateSize(t testing.TB) int {
	n, err := StateSize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKeyMatchesSealAndOpen: a Key seals blocks Open reads and opens blocks
// Seal wrote; Wipe leaves nothing of its state in its memory.
func TestKeyMatchesSealAndOpen(t *testing.T) {
	mem := make([]byte, mustStateSize(t)+100)
	for i := range mem {
		mem[i] = 0xA5
	}
	k, err := NewKey(key(9), 3, mem)
	if err != nil {
		t.Fatal(err)
	}
	pt := bytes.Repeat([]byte("rows "), 1000)
	blk, err := k.Seal(nil, "table:t", pt, []byte("aad"))
	if err != nil || len(blk) != len(pt)+Overhead {
		t.Fatalf("seal: %d bytes, %v", len(blk), err)
	}
	if got, err := Open(nil, key(9), "table:t", blk, []byte("aad")); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open of a Key's block: %v", err)
	}
	other, _ := Seal(nil, key(9), 3, "table:t", pt, nil)
	if got, err := k.Open(nil, "table:t", other, nil); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Key.Open of Seal's block: %v", err)
	}
	if _, err := k.Open(nil, "table:u", other, nil); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened under another key id: %v", err)
	}
	if g, _ := Generation(blk); g != 3 {
		t.Fatalf("generation %d", g)
	}
	k.Wipe()
	if n := bytes.Count(mem, []byte{0}); n != len(mem) {
		t.Fatalf("Wipe left %d of %d bytes", len(mem)-n, len(mem))
	}
	if _, err := NewKey(key(9), 3, make([]byte, 10)); err == nil {
		t.Fatal("NewKey accepted 10 bytes of state memory")
	}
	// Pointers in misaligned memory would crash the collector.
	if _, err := NewKey(key(9), 3, mem[1:]); err == nil {
		t.Fatal("NewKey accepted misaligned state memory")
	}
}

// TestWipeObjectFollowsPointers: wiping a cipher value zeroes every struct
// it reaches through pointers too (an s390x AES block without CPACF keeps
// its key schedule in a separate struct: this test runs under qemu-s390x in
// make test-s390x), each once, even through cycles.
func TestWipeObjectFollowsPointers(t *testing.T) {
	type inner struct{ secret [32]byte }
	type outer struct {
		in   *inner
		self *outer
		n    int
	}
	in := &inner{secret: [32]byte{1, 2, 3}}
	o := &outer{in: in, n: 7}
	o.self = o
	wipeObject(o)
	if in.secret != ([32]byte{}) || o.n != 0 || o.in != nil {
		t.Fatalf("wipeObject left state behind: %v %d", in.secret[:3], o.n)
	}

	b, err := aes.NewCipher(key(4))
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []any{g, b} {
		v := reflect.ValueOf(x)
		objs := reachable(v.UnsafePointer(), v.Type().Elem())
		wipeObject(x)
		for _, o := range objs {
			if mem := unsafe.Slice((*byte)(o.p), o.t.Size()); bytes.Count(mem, []byte{0}) != len(mem) {
				t.Errorf("%v reached from %T not wiped", o.t, x)
			}
		}
	}
}

// TestRelocateRefusesOutsidePointers: state that points at memory outside
// what is moved is refused, not half moved.
func TestRelocateRefusesOutsidePointers(t *testing.T) {
	type holder struct {
		s []byte
		p *int
	}
	x := 5
	mem := make([]byte, 256)
	if _, _, err := relocate(mem, &holder{s: make([]byte, 4)}); !errors.Is(err, errMove) {
		t.Fatalf("moved a slice of outside memory: %v", err)
	}
	// A typed pointer to another struct or value is followed and moved too.
	moved, _, err := relocate(mem, &holder{p: &x})
	if err != nil || *moved[0].(*holder).p != 5 || x != 0 {
		t.Fatalf("pointee not moved and wiped: %v, x=%d", err, x)
	}
	type self struct {
		buf [8]byte
		p   *byte
	}
	s := &self{buf: [8]byte{1, 2, 3}}
	s.p = &s.buf[2]
	moved, _, err = relocate(mem, s)
	if err != nil {
		t.Fatal(err)
	}
	c := moved[0].(*self)
	if *c.p != 3 || c.p != &c.buf[2] || s.buf[2] != 0 {
		t.Fatalf("self pointer not repointed at the copy, or the original not wiped")
	}
}

func FuzzOpen(f *testing.F) {
	blk, _ := Seal(nil, key(1), 1, "k", []byte("hello"), nil)
	f.Add(blk, "k", []byte{})
	f.Add([]byte{1}, "k", []byte{})
	f.Fuzz(func(t *testing.T, blk []byte, keyID string, aad []byte) {
		pt, err := Open(nil, key(1), keyID, blk, aad)
		if err == nil && keyID != "k" {
			t.Fatalf("opened under key id %q: %q", keyID, pt)
		}
	})
}

func BenchmarkSeal4K(b *testing.B) {
	pt := make([]byte, 4096)
	k := key(1)
	buf := make([]byte, 0, 4096+Overhead)
	b.SetBytes(4096)
	for b.Loop() {
		if _, err := Seal(buf[:0], k, 1, "table:t", pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBlock: format 2 through a Key (what the plugin does per page),
// against AES-256-GCM with one cached key (format 1's cost) as the baseline
// in the same run.
func BenchmarkBlock(b *testing.B) {
	pt := make([]byte, 4096)
	buf := make([]byte, 0, 4096+Overhead)
	b.Run("baseline-aes-gcm-seal-4k", func(b *testing.B) {
		m, _ := newMaster(key(1))
		nonce := make([]byte, 12)
		b.SetBytes(4096)
		for b.Loop() {
			m.v1.Seal(buf[:0], nonce, pt, nil)
		}
	})
	mem := make([]byte, mustStateSize(b))
	k, err := NewKey(key(1), 1, mem)
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := k.Seal(nil, "table:t", pt, nil)
	b.Run("key-seal-4k", func(b *testing.B) {
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := k.Seal(buf[:0], "table:t", pt, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("key-open-4k", func(b *testing.B) {
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := k.Open(buf[:0], "table:t", blk, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
