// SPDX-License-Identifier: Apache-2.0

package keycache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

func start(t testing.TB) (*testenv.KP, string, *testenv.Byokd) {
	t.Helper()
	k := testenv.StartKP(t)
	root := k.RootKey(t, "plugin-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	return k, root, b
}

// TestBlocksDoNotOpenElsewhere: a tampered block, a block read under another
// keyid (a block moved to another table) and a block from another table all
// fail to decrypt, in both modes, and never yield garbage.
func TestBlocksDoNotOpenElsewhere(t *testing.T) {
	_, _, b := start(t)
	for _, mode := range keyprovider.Modes() {
		t.Run(string(mode), func(t *testing.T) {
			p, err := Open(b.Socket, mode)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			orders, err := p.Customize("table:orders")
			if err != nil {
				t.Fatal(err)
			}
			users, err := p.Customize("table:users")
			if err != nil {
				t.Fatal(err)
			}
			page := bytes.Repeat([]byte("row data "), 400)
			dst := make([]byte, len(page)+block.Overhead)
			n, err := p.Encrypt(orders, page, dst)
			if err != nil || n != len(dst) {
				t.Fatalf("encrypt: %d %v", n, err)
			}
			blk := dst[:n]
			out := make([]byte, len(page))
			if m, err := p.Decrypt(orders, blk, out); err != nil || !bytes.Equal(out[:m], page) {
				t.Fatalf("decrypt: %v", err)
			}
			other := make([]byte, len(page)+block.Overhead)
			on, _ := p.Encrypt(users, page, other)
			tampered := bytes.Clone(blk)
			tampered[block.HeaderSize+10] ^= 0x01
			for name, c := range map[string]struct {
				h   int
				blk []byte
			}{
				"tampered":                 {orders, tampered},
				"read under another keyid": {users, blk},
				"block of another table":   {orders, other[:on]},
				"truncated":                {orders, blk[:len(blk)-1]},
				"garbage":                  {orders, bytes.Repeat([]byte("!!! memory corrupted by format to test salvage "), 100)},
				"too short":                {orders, blk[:5]},
			} {
				clear(out)
				m, err := p.Decrypt(c.h, c.blk, out)
				if err == nil || m != 0 || !bytes.Equal(out, make([]byte, len(out))) {
					t.Errorf("%s: decrypted (%d bytes, %v)", name, m, err)
				}
				// WiredTiger's salvage skips a block whose decryption says
				// it is corrupt (WT_ERROR), and stops on any other error:
				// corrupt only for a keyid with blocks that opened (orders),
				// never for one whose key may be wrong (users: none has).
				if want := c.h == orders; errors.Is(err, ErrCorrupt) != want || errors.Is(err, ErrLocked) {
					t.Errorf("%s: %v reported as corrupt: %v, want %v", name, err, errors.Is(err, ErrCorrupt), want)
				}
			}
		})
	}
}

// TestLockWipesKeysAndUnlockRefetches: on LOCKED every cached key is wiped at
// once and calls fail saying why; on UNLOCKED keys are fetched again.
func TestLockWipesKeysAndUnlockRefetches(t *testing.T) {
	k, root, b := start(t)
	p, err := Open(b.Socket, keyprovider.Release)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h, err := p.Customize("db:admin")
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 64+block.Overhead)
	if _, err := p.Encrypt(h, make([]byte, 64), dst); err != nil {
		t.Fatal(err)
	}
	p.mu.RLock()
	slot := p.entries[h].slot
	p.mu.RUnlock()
	if slot == nil || bytes.Equal(slot, make([]byte, len(slot))) {
		t.Fatal("no key state cached")
	}
	k.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, root) })
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err = p.Encrypt(h, make([]byte, 64), dst)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("encrypt still works 3 s after the disable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(err, ErrLocked) || err.Error() != "byokd: node locked: root key disabled" {
		t.Fatalf("error: %v", err)
	}
	if !bytes.Equal(slot, make([]byte, len(slot))) {
		t.Fatal("the cached key state was not wiped")
	}
	k.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, root) })
	deadline = time.Now().Add(3 * time.Second)
	for {
		if _, err = p.Encrypt(h, make([]byte, 64), dst); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("encrypt fails 3 s after the enable: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// byokd stopping is a lock too: keys go, calls fail.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for {
		_, err = p.Encrypt(h, make([]byte, 64), dst)
		if err != nil && strings.Contains(err.Error(), "byokd") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("encrypt still works after byokd stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpenFailsClearly(t *testing.T) {
	if _, err := Open("/nonexistent/kp.sock", keyprovider.Release); err == nil || !strings.Contains(err.Error(), "cannot reach byokd at /nonexistent/kp.sock") {
		t.Fatalf("no byokd: %v", err)
	}
	if _, err := Open("/nonexistent/kp.sock", "fast"); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("bad mode: %v", err)
	}
}

// TestOpenTakesARelativeSocket: the extension's socket= may be relative to
// the database's working directory.
func TestOpenTakesARelativeSocket(t *testing.T) {
	_, _, b := start(t)
	t.Chdir(filepath.Dir(b.Socket))
	p, err := Open(filepath.Base(b.Socket), keyprovider.Release)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h, err := p.Customize("table:t")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(h)
}

// TestAKeyOfAnotherGenerationIsRefusedUntilRestart: once an operator makes
// byokd serve another data key (byokctl accept-key), a running plugin
// refuses every key, in both modes, rather than write pages under a second
// key; a plugin opened afterwards (the database restarted) works.
func TestAKeyOfAnotherGenerationIsRefusedUntilRestart(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "plugin-root")
	a := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Proof: "1s"})
	st := a.WaitState(t, a.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	other := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	otherSt := other.WaitState(t, other.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	var providers []*Provider
	for _, mode := range keyprovider.Modes() {
		p, err := Open(a.Socket, mode)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		h, err := p.Customize("table:t")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Encrypt(h, []byte("page"), make([]byte, 4+block.Overhead)); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		providers = append(providers, p)
	}
	b, err := os.ReadFile(filepath.Join(other.Dir, "state", "dek.json"))
	if err != nil {
		t.Fatal(err)
	}
	dek := filepath.Join(a.Dir, "state", "dek.json")
	if err := os.WriteFile(dek+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dek+".tmp", dek); err != nil {
		t.Fatal(err)
	}
	a.WaitState(t, a.Client(), pb.State_STATE_LOCKED, 5*time.Second)
	if out, errOut, code := a.Ctl(t, nil, "accept-key", st.GetKeyFingerprint(), otherSt.GetKeyFingerprint()); code != 0 {
		t.Fatalf("accept-key: %s %s", out, errOut)
	}
	a.WaitState(t, a.Client(), pb.State_STATE_UNLOCKED, 5*time.Second)
	for i, p := range providers {
		// The refusal comes with the Watch stream's new status, or with
		// the first data key of the new key, whichever is first.
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err = p.Encrypt(1, []byte("page"), make([]byte, 4+block.Overhead)); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrLocked) || !strings.Contains(fmt.Sprint(err), otherSt.GetKeyFingerprint()+" (generation 2)") {
			t.Fatalf("%s provider after the key changed: %v, want a refusal naming the new key", keyprovider.Modes()[i], err)
		}
		// It stays refused: byokd serves keys again, but not this
		// provider's.
		time.Sleep(200 * time.Millisecond)
		if _, err := p.Encrypt(1, []byte("page"), make([]byte, 4+block.Overhead)); !errors.Is(err, ErrLocked) {
			t.Fatalf("%s provider serves again: %v", keyprovider.Modes()[i], err)
		}
	}
	p, err := Open(a.Socket, keyprovider.Release)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Customize("table:t"); err != nil {
		t.Fatalf("a provider opened after the change: %v", err)
	}
}

// TestStrictModeReturnsWhatItAccepts: the largest block byokd encrypts in
// strict mode comes back to the plugin and decrypts; one byte more is
// refused by the plugin itself, saying why.
func TestStrictModeReturnsWhatItAccepts(t *testing.T) {
	_, _, b := start(t)
	p, err := Open(b.Socket, keyprovider.Strict)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h, err := p.Customize("table:big")
	if err != nil {
		t.Fatal(err)
	}
	page := bytes.Repeat([]byte{'v'}, pb.MaxPlaintext)
	dst := make([]byte, len(page)+block.Overhead+1)
	n, err := p.Encrypt(h, page, dst)
	if err != nil {
		t.Fatalf("encrypt of %d bytes, the limit: %v", len(page), err)
	}
	out := make([]byte, len(page))
	if m, err := p.Decrypt(h, dst[:n], out); err != nil || m != len(page) || !bytes.Equal(out, page) {
		t.Fatalf("decrypt of the largest block: %d, %v", m, err)
	}
	big := append(page, 'v')
	_, err = p.Encrypt(h, big, dst)
	if err == nil || !strings.Contains(err.Error(), "strict mode encrypts blocks of at most") {
		t.Fatalf("a block over the limit: %v", err)
	}
}

// BenchmarkStrict: one strict-mode Decrypt and Encrypt of a 4 KiB page from
// the plugin's side, against byokd's empty Status call over the same
// connection as the baseline in the same run: what a page read or write
// costs in strict mode beyond the round trip itself.
func BenchmarkStrict(b *testing.B) {
	_, _, bk := start(b)
	p, err := Open(bk.Socket, keyprovider.Strict)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	h, err := p.Customize("table:bench")
	if err != nil {
		b.Fatal(err)
	}
	page := bytes.Repeat([]byte("r"), 4096)
	blk := make([]byte, len(page)+block.Overhead)
	if _, err := p.Encrypt(h, page, blk); err != nil {
		b.Fatal(err)
	}
	out := make([]byte, len(page))
	b.Run("baseline-status", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.client.Status(context.Background(), &pb.StatusRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt-4k", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Decrypt(h, blk, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encrypt-4k", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Encrypt(h, page, blk); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestReleaseDuringAFetchKeepsNoKey: an encryptor released while its key is
// being fetched (WiredTiger ends a table's encryptor while a page of it is
// written) must not keep that key in a slot nobody wipes until Close.
func TestReleaseDuringAFetchKeepsNoKey(t *testing.T) {
	_, _, b := start(t)
	p, err := Open(b.Socket, keyprovider.Release)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	unlocked := &pb.StatusResponse{State: pb.State_STATE_UNLOCKED}
	for i := 0; i < 300; i++ {
		h, err := p.Customize(fmt.Sprintf("table:t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// Lock and unlock, so that the next use fetches the key again.
		p.block("test")
		p.setState(unlocked)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = p.Encrypt(h, make([]byte, 64), make([]byte, 64+block.Overhead))
		}()
		time.Sleep(time.Duration(i%20) * 10 * time.Microsecond)
		p.Release(h)
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	size, _ := block.StateSize()
	size = (size + 63) &^ 63
	total := 0
	for _, c := range p.slab.chunks {
		total += len(c.Bytes()) / size
	}
	held := 0
	for _, e := range p.entries {
		if e.slot != nil {
			held++
		}
	}
	if total != len(p.slab.freed)+held {
		t.Fatalf("%d key slots, %d free, %d held by encryptors: %d hold a key nobody will wipe",
			total, len(p.slab.freed), held, total-len(p.slab.freed)-held)
	}
}

// TestWipingCodecLeavesNoCopy: a GetDataKey answer that arrives in several
// receive buffers is decoded without a copy of the key left behind in this
// process's memory (gRPC's own codec joins the pieces in a buffer it drops
// unwiped). The test never holds the whole key itself: keyByte makes it.
func TestWipingCodecLeavesNoCopy(t *testing.T) {
	keyByte := func(i int) byte { return byte(0x5A ^ (i*29 + 3)) }
	key := make([]byte, block.KeySize)
	for i := range key {
		key[i] = keyByte(i)
	}
	wire, err := protobuf.Marshal(&pb.GetDataKeyResponse{Key: key, KeyFingerprint: "f", Generation: 1})
	clear(key)
	if err != nil {
		t.Fatal(err)
	}
	var pieces [][]byte
	var data mem.BufferSlice
	for rest := wire; len(rest) > 0; {
		n := min(len(rest), 7)
		pieces = append(pieces, rest[:n])
		data = append(data, mem.SliceBuffer(rest[:n]))
		rest = rest[n:]
	}
	var got pb.GetDataKeyResponse
	codec := wipingCodec{encoding.GetCodecV2(grpcproto.Name)}
	if err := codec.Unmarshal(data, &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	for i, b := range got.GetKey() {
		if b != keyByte(i) {
			t.Fatalf("decoded key byte %d wrong", i)
		}
	}
	clear(got.Key)
	for i, p := range pieces {
		if !bytes.Equal(p, make([]byte, len(p))) {
			t.Fatalf("receive buffer %d not wiped", i)
		}
	}
	head := make([]byte, 16)
	for i := range head {
		head[i] = keyByte(i)
	}
	copies, searched := 0, 0
	testenv.EachRegion(t, os.Getpid(), func(r testenv.Region, buf []byte) {
		searched += len(buf)
		for off := 0; ; {
			j := bytes.Index(buf[off:], head)
			if j < 0 {
				return
			}
			off += j + 1
			whole := off-1+block.KeySize <= len(buf)
			for i := 16; whole && i < block.KeySize; i++ {
				whole = buf[off-1+i] == keyByte(i)
			}
			if whole {
				copies++
			}
		}
	}, 1<<30)
	if searched < 1<<20 {
		t.Fatalf("searched only %d bytes", searched)
	}
	if copies != 0 {
		t.Fatalf("%d copies of the data key left in this process's memory", copies)
	}
}

// TestBlockTimeout: a page's strict-mode call is bounded by 10 s; the
// largest block gets 1 s more per MiB.
func TestBlockTimeout(t *testing.T) {
	for n, want := range map[int]time.Duration{
		0:               10 * time.Second,
		4096:            10 * time.Second,
		1<<20 - 1:       10 * time.Second,
		1 << 20:         11 * time.Second,
		pb.MaxPlaintext: 74 * time.Second,
	} {
		if got := blockTimeout(n); got != want {
			t.Errorf("blockTimeout(%d) = %v, want %v", n, got, want)
		}
	}
}
