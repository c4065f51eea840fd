// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestWiredTigerLeavesNoKeyAfterLock holds a WiredTiger 11.3 database open
// through the plugin, with two tables under two key ids, reads and writes
// until every page has been encrypted and decrypted many times, then
// disables the root key and reads the database process's whole memory: no
// data key and none of its AES round keys may be left anywhere, mlocked or
// not. Before the lock the same search finds the round keys in the plugin's
// mlocked memory (and only there), so it demonstrably sees them. In strict
// mode the database process never holds them at all.
func TestWiredTigerLeavesNoKeyAfterLock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("reading another process's memory needs root: run the tests as root, as CI does")
	}
	for _, mode := range []string{"release", "strict"} {
		t.Run(mode, func(t *testing.T) {
			w := newWT(t, "11.3", nil)
			w.cache = "1MB" // smaller than the tables: pages are read and written again and again
			keyIDs := []string{"orders", "customers"}
			for i, id := range keyIDs {
				if out, err := w.harness(t, nil, w.config(mode, i == 0), "insert", "table:"+id, id, "20000", "SCAN-ROW"); err != nil {
					t.Fatalf("insert: %v\n%s", err, out)
				}
			}
			var keys [][]byte
			for _, id := range append(keyIDs, "system") { // system: the connection's own (metadata, journal)
				r, err := w.b.Client().GetDataKey(context.Background(), &pb.GetDataKeyRequest{KeyId: id})
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, r.GetKey())
			}
			holders := []*holder{hold(t, w, mode, "table:orders")}
			h := holders[0]
			for i := 0; i < 3; i++ {
				for _, cmd := range []string{fmt.Sprintf("insert %d 500 SCAN-ROW", 100000+i*500), "checkpoint", "scan"} {
					if r := h.do(t, cmd); !strings.HasPrefix(r, "ok") {
						t.Fatalf("%s: %s\n%s", cmd, r, h.log.String())
					}
				}
			}
			pid := h.cmd.Process.Pid
			inMlocked, leaks := scanForKeys(t, pid, keys)
			t.Logf("%s, unlocked: %d round keys in mlocked memory, elsewhere: %v", mode, inMlocked, leaks)
			if len(leaks) > 0 {
				t.Fatalf("data keys or round keys outside mlocked memory while unlocked: %s", strings.Join(leaks, "; "))
			}
			if mode == "release" && inMlocked == 0 {
				t.Fatal("no round key found in the plugin's mlocked memory while it serves: the search proves nothing")
			}
			if mode == "strict" && inMlocked != 0 {
				t.Fatalf("strict mode: %d round keys in the database process", inMlocked)
			}

			w.k.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, w.root) })
			defer w.k.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, w.root) })
			deadline := time.Now().Add(5 * time.Second)
			for {
				r := h.do(t, "checkpoint")
				if strings.HasPrefix(r, "err") && h.said(r, "node locked") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the database still writes 5 s after the disable: %s", r)
				}
				h.do(t, "insert 300000 10 SCAN-ROW")
				time.Sleep(50 * time.Millisecond)
			}
			inMlocked, leaks = scanForKeys(t, pid, keys)
			if inMlocked > 0 || len(leaks) > 0 {
				t.Fatalf("%s mode, after the lock: %d round keys in mlocked memory; elsewhere: %s", mode, inMlocked, strings.Join(leaks, "; "))
			}
			t.Logf("%s, locked: no data key and no round key in the database process", mode)
		})
	}
}

// scanForKeys reads pid's memory and counts each data key and its AES-256
// round keys (in byte order, as AES-NI and CPACF keep them, and in the
// 32-bit words of Go's generic code) in mlocked mappings, and lists those
// found elsewhere.
func scanForKeys(t *testing.T, pid int, keys [][]byte) (inMlocked int, leaks []string) {
	t.Helper()
	type needle struct {
		name string
		b    []byte
	}
	var needles []needle
	for i, k := range keys {
		needles = append(needles, needle{fmt.Sprintf("key %d", i), k})
		for r, rk := range roundKeys(k) {
			if r < 2 {
				continue // rounds 0 and 1 are the key itself
			}
			needles = append(needles, needle{fmt.Sprintf("key %d round %d", i, r), rk})
			sw := make([]byte, 16)
			for j := 0; j < 16; j += 4 {
				binary.LittleEndian.PutUint32(sw[j:], binary.BigEndian.Uint32(rk[j:]))
			}
			needles = append(needles, needle{fmt.Sprintf("key %d round %d (words)", i, r), sw})
		}
	}
	var scanned int64
	testenv.EachRegion(t, pid, func(r testenv.Region, buf []byte) {
		scanned += int64(len(buf))
		for _, nd := range needles {
			c := bytes.Count(buf, nd.b)
			switch {
			case c == 0:
			case r.Mlocked:
				// The plugin's key state: the schedule starts with the key.
				inMlocked += c
			default:
				leaks = append(leaks, fmt.Sprintf("%d× %s in %s (mlocked: %v)", c, nd.name, r.Name, r.Mlocked))
			}
		}
	}, 0)
	if scanned < 1<<20 {
		t.Fatalf("only %d bytes searched: the search proves nothing", scanned)
	}
	return inMlocked, leaks
}

// roundKeys expands an AES-256 key into its 15 round keys (FIPS-197 5.2).
func roundKeys(key []byte) [][]byte {
	const nk, nr = 8, 14
	w := make([]uint32, 4*(nr+1))
	for i := 0; i < nk; i++ {
		w[i] = binary.BigEndian.Uint32(key[4*i:])
	}
	sbox := sboxTable()
	sub := func(x uint32) uint32 {
		return uint32(sbox[x>>24])<<24 | uint32(sbox[x>>16&0xff])<<16 | uint32(sbox[x>>8&0xff])<<8 | uint32(sbox[x&0xff])
	}
	rcon := uint32(1)
	for i := nk; i < len(w); i++ {
		x := w[i-1]
		switch i % nk {
		case 0:
			x = sub(x<<8|x>>24) ^ rcon<<24
			rcon <<= 1
		case 4:
			x = sub(x)
		}
		w[i] = w[i-nk] ^ x
	}
	out := make([][]byte, nr+1)
	for r := range out {
		out[r] = make([]byte, 16)
		for j := 0; j < 4; j++ {
			binary.BigEndian.PutUint32(out[r][4*j:], w[4*r+j])
		}
	}
	return out
}

// sboxTable recovers AES's S-box from crypto/aes: a single-round probe is not
// exposed, so it is derived from FIPS-197's definition instead.
func sboxTable() [256]byte {
	var s [256]byte
	// Multiplicative inverse in GF(2^8), then the affine transform.
	mul := func(a, b byte) byte {
		var p byte
		for b != 0 {
			if b&1 != 0 {
				p ^= a
			}
			hi := a & 0x80
			a <<= 1
			if hi != 0 {
				a ^= 0x1b
			}
			b >>= 1
		}
		return p
	}
	for x := 0; x < 256; x++ {
		var inv byte
		if x != 0 {
			for y := 1; y < 256; y++ {
				if mul(byte(x), byte(y)) == 1 {
					inv = byte(y)
					break
				}
			}
		}
		b := inv
		s[x] = b ^ (b<<1 | b>>7) ^ (b<<2 | b>>6) ^ (b<<3 | b>>5) ^ (b<<4 | b>>4) ^ 0x63
	}
	return s
}

// TestRoundKeysMatchCryptoAES checks the test's key expansion: the last two
// round keys of AES-256, used as a key, encrypt as crypto/aes does with the
// expansion's own output (FIPS-197 appendix A.3's key).
func TestRoundKeysMatchCryptoAES(t *testing.T) {
	key := []byte{0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81,
		0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4}
	rk := roundKeys(key)
	// FIPS-197 A.3: w[56..59] = fe4890d1 e6188d0b 046df344 706c631e.
	if got := fmt.Sprintf("%x", rk[14]); got != "fe4890d1e6188d0b046df344706c631e" {
		t.Fatalf("round key 14: %s", got)
	}
	if _, err := aes.NewCipher(key); err != nil {
		t.Fatal(err)
	}
}
