package block

import (
	"bytes"
	"errors"
	"testing"
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
