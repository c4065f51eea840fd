// SPDX-License-Identifier: Apache-2.0

// Package keycache is the storage-engine plugin's side of byokd: it fetches
// data keys over byokd's socket (release mode) or has byokd encrypt and
// decrypt (strict mode), keeps fetched keys in locked memory, and wipes them
// the moment byokd reports the node locked or stops answering.
package keycache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/crypto/secmem"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// ErrLocked is wrapped by every error caused by the node being locked or
// byokd being unreachable.
var ErrLocked = errors.New("node locked")

// lockedError says why keys may not be used; errors.Is(err, ErrLocked).
type lockedError struct{ msg string }

func (e *lockedError) Error() string { return e.msg }
func (e *lockedError) Unwrap() error { return ErrLocked }

func locked(why string) error { return &lockedError{msg: "byokd: " + why} }

// ErrCorrupt is wrapped by the error of a block that does not open (too
// short, of an unknown format, tampered with, or sealed for another keyid)
// under a key that has opened other blocks of its keyid in this process.
// WiredTiger's salvage skips such a block (the plugin reports it as
// WT_ERROR), where it stops on any other error. A keyid none of whose
// blocks has opened may be under the wrong key (a mistyped cluster_id,
// another node's key): its failures are not reported as corrupt, or
// salvage would discard a whole database. Never the error of a locked node.
var ErrCorrupt = errors.New("block does not open")

type corruptError struct{ msg string }

func (e *corruptError) Error() string { return e.msg }
func (e *corruptError) Unwrap() error { return ErrCorrupt }

func corrupt(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}

// wipingCodec is gRPC's protobuf codec, but it zeroes each received message's
// wire bytes once decoded: a GetDataKey answer holds a data key, and gRPC
// would hand its buffers back to a pool, or to the collector, as they are.
// A message that arrived in pieces is joined in a buffer of its own, wiped
// too (gRPC's codec joins them in one it drops unwiped). The decoded
// message's key is wiped by its reader.
type wipingCodec struct{ encoding.CodecV2 }

func (c wipingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(protobuf.Message)
	if !ok {
		return fmt.Errorf("byokd: cannot decode a %T", v)
	}
	var wire []byte
	if len(data) == 1 {
		wire = data[0].ReadOnlyData()
	} else {
		wire = make([]byte, data.Len())
		data.CopyTo(wire)
		defer clear(wire)
	}
	err := protobuf.Unmarshal(wire, m)
	for _, b := range data {
		clear(b.ReadOnlyData()) // the receive buffer: written only by the transport, done with now
	}
	return err
}

// Provider holds the connection to byokd and the cached keys.
type Provider struct {
	mode   keyprovider.Mode
	socket string
	client *keyprovider.Client
	stop   context.CancelFunc
	done   chan struct{}

	mu      sync.RWMutex
	blocked string // why keys may not be used; "" when byokd serves them
	// fingerprint names byokd's data encryption key this provider serves
	// keys of, pinned by the first status or key that names one. byokd
	// changes it only when an operator accepts another key; the provider
	// then refuses every key until the database restarts.
	fingerprint string
	gen         uint32
	changed     string // why keys are refused for good; "" while the key holds
	entries     map[int]*entry
	next        int
	slab        slab

	// opened holds the keyids of which a block has opened in this process:
	// only for those is a block that does not open reported as corrupt.
	opened sync.Map
}

// doesNotOpen is the error of a block of keyID that does not open.
func (p *Provider) doesNotOpen(keyID, what string) error {
	if _, ok := p.opened.Load(keyID); ok {
		return corrupt("byokd: %s", what)
	}
	return fmt.Errorf("byokd: %s; no block of keyid %q has opened in this process, so the key may be the wrong one (another cluster_id or node key): not reported as corrupt", what, keyID)
}

// didOpen records that a block of keyID opened.
func (p *Provider) didOpen(keyID string) {
	if _, ok := p.opened.Load(keyID); !ok {
		p.opened.Store(keyID, true)
	}
}

type entry struct {
	keyID string
	key   *block.Key // its state lives in slot; nil when not fetched
	slot  []byte     // locked memory from the slab
}

// Open connects to byokd at socket ("" is the node's socket; a relative
// path is taken from the database's working directory) in mode ("" is
// release). It fails when byokd does not answer: a database must not open
// without its keys, and never falls back to plaintext.
func Open(socket string, mode keyprovider.Mode) (*Provider, error) {
	if socket == "" {
		socket = keyprovider.DefaultSocket
	}
	if mode == "" {
		mode = keyprovider.Release
	}
	if _, err := keyprovider.ParseMode(string(mode)); err != nil {
		return nil, fmt.Errorf("byokd: %w", err)
	}
	client, err := keyprovider.Dial(socket,
		// Frames are read straight into the buffers the codec wipes: no
		// read buffer keeps a copy of a data key.
		grpc.WithReadBufferSize(0),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wipingCodec{encoding.GetCodecV2(proto.Name)}),
			grpc.MaxCallRecvMsgSize(pb.MaxMessage), grpc.MaxCallSendMsgSize(pb.MaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("byokd: %w", err)
	}
	p := &Provider{mode: mode, socket: socket, client: client, entries: map[int]*entry{}, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := p.client.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("byokd: cannot reach byokd at %s: %s", socket, describe(err))
	}
	if !containsMode(st.GetModes(), mode) {
		client.Close()
		return nil, fmt.Errorf("byokd: byokd at %s does not serve %s mode (it serves: %s)", socket, mode, strings.Join(st.GetModes(), ", "))
	}
	p.setState(st)
	wctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	go p.watch(wctx)
	return p, nil
}

func containsMode(ms []string, m keyprovider.Mode) bool {
	for _, x := range ms {
		if x == string(m) {
			return true
		}
	}
	return false
}

// Mode is release or strict.
func (p *Provider) Mode() keyprovider.Mode { return p.mode }

// describe turns a gRPC error into a short phrase.
func describe(err error) string { return keyprovider.Err(err).Error() }

// setState applies a status from byokd: a lock wipes every cached key at
// once; an unlock lets keys be fetched again on next use.
func (p *Provider) setState(st *pb.StatusResponse) {
	if why := p.pin(st.GetKeyFingerprint(), st.GetGeneration()); why != "" {
		p.block(why)
		return
	}
	if keyprovider.Serving(st.GetState()) {
		p.mu.Lock()
		if p.changed == "" {
			p.blocked = ""
		}
		p.mu.Unlock()
		return
	}
	reason := st.GetReason()
	what := "node locked"
	if st.GetState() == pb.State_STATE_STARTING {
		what = "node starting"
	}
	if reason != "" {
		what += ": " + reason
	}
	p.block(what)
}

// pin records the first key byokd names and returns why keys are refused
// for good once byokd names another: data written under the old key must
// never be mixed with the new one in one running database.
func (p *Provider) pin(fingerprint string, gen uint32) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.changed != "":
		return p.changed
	case fingerprint == "":
		return ""
	case p.fingerprint == "":
		p.fingerprint, p.gen = fingerprint, gen
		return ""
	case fingerprint != p.fingerprint:
		p.changed = fmt.Sprintf("byokd now serves data key %s (generation %d), not %s (generation %d) that this database "+
			"opened with: an operator accepted another key; restart the database once that is intended", fingerprint, gen, p.fingerprint, p.gen)
		return p.changed
	}
	return ""
}

func (p *Provider) block(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = why
	for _, e := range p.entries {
		p.forget(e)
	}
}

// forget wipes an entry's key state and returns its memory; p.mu is held.
func (p *Provider) forget(e *entry) {
	if e.key != nil {
		e.key.Wipe()
		secmem.Wipe(e.slot)
		p.slab.free(e.slot)
		e.key, e.slot = nil, nil
	}
}

// watch follows byokd's state. A broken stream is treated as a lock: keys
// are wiped until byokd answers again.
func (p *Provider) watch(ctx context.Context) {
	defer close(p.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		stream, err := p.client.Watch(ctx, &pb.WatchRequest{})
		if err == nil {
			for {
				m, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				backoff = 100 * time.Millisecond
				p.setState(m.GetStatus())
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.block("byokd unreachable: " + describe(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// Customize registers a key id (a WiredTiger keyid) and returns its handle.
// In release mode the key is fetched at once, so that a database opens only
// when its keys are there.
func (p *Provider) Customize(keyID string) (int, error) {
	if len(keyID) == 0 || len(keyID) > block.MaxKeyID {
		return 0, fmt.Errorf("byokd: keyid must be 1 to %d bytes", block.MaxKeyID)
	}
	p.mu.Lock()
	p.next++
	h := p.next
	p.entries[h] = &entry{keyID: keyID}
	p.mu.Unlock()
	var err error
	if p.mode == keyprovider.Release {
		_, err = p.key(h)
	} else {
		err = p.check()
	}
	if err != nil {
		p.Release(h)
		return 0, err
	}
	return h, nil
}

// check fails when keys may not be used now.
func (p *Provider) check() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.blocked != "" {
		return locked(p.blocked)
	}
	return nil
}

// key returns the cached key state of h, fetching the key when needed. The
// state lives in locked memory owned by the cache: use it under p.mu.RLock
// only, after checking stillCached.
func (p *Provider) key(h int) (*block.Key, error) {
	p.mu.RLock()
	e, ok := p.entries[h]
	if !ok {
		p.mu.RUnlock()
		return nil, fmt.Errorf("byokd: unknown encryptor handle %d", h)
	}
	if p.blocked != "" {
		why := p.blocked
		p.mu.RUnlock()
		return nil, locked(why)
	}
	if e.key != nil {
		p.mu.RUnlock()
		return e.key, nil
	}
	keyID := e.keyID
	p.mu.RUnlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.client.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: keyID})
	if err != nil {
		if errors.Is(keyprovider.Err(err), keyprovider.ErrLocked) {
			return nil, locked(describe(err))
		}
		return nil, fmt.Errorf("byokd: get data key for %q: %s", keyID, describe(err))
	}
	k := r.GetKey()
	defer secmem.Wipe(k)
	if len(k) != block.KeySize {
		return nil, fmt.Errorf("byokd: data key of %d bytes", len(k))
	}
	if why := p.pin(r.GetKeyFingerprint(), r.GetGeneration()); why != "" {
		p.block(why)
		return nil, locked(why)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked != "" {
		return nil, locked(p.blocked)
	}
	if cur, ok := p.entries[h]; !ok || cur != e {
		// Released while the key was fetched: a key stored in it now
		// would never be wiped until Close.
		return nil, fmt.Errorf("byokd: encryptor handle %d was released", h)
	}
	if e.key == nil {
		slot, err := p.slab.alloc()
		if err != nil {
			return nil, fmt.Errorf("byokd: locked memory for keys: %w", err)
		}
		key, err := block.NewKey(k, r.GetGeneration(), slot)
		if err != nil {
			p.slab.free(slot)
			return nil, fmt.Errorf("byokd: %w", err)
		}
		e.key, e.slot = key, slot
	}
	return e.key, nil
}

// Encrypt seals src into dst and returns the block's length.
func (p *Provider) Encrypt(h int, src, dst []byte) (int, error) {
	if len(dst) < len(src)+block.Overhead {
		return 0, fmt.Errorf("byokd: destination of %d bytes for %d bytes of data", len(dst), len(src))
	}
	keyID, err := p.keyID(h)
	if err != nil {
		return 0, err
	}
	if p.mode == keyprovider.Strict {
		if err := p.check(); err != nil {
			return 0, err
		}
		if len(src) > pb.MaxPlaintext {
			return 0, fmt.Errorf("byokd: strict mode encrypts blocks of at most %d bytes; this one has %d (lower the table's leaf_value_max)", pb.MaxPlaintext, len(src))
		}
		ctx, cancel := context.WithTimeout(context.Background(), blockTimeout(len(src)))
		defer cancel()
		r, err := p.client.Encrypt(ctx, &pb.EncryptRequest{KeyId: keyID, Plaintext: src})
		if err != nil {
			return 0, p.rpcErr("encrypt", err)
		}
		if len(r.GetCiphertext()) > len(dst) {
			return 0, errors.New("byokd: encrypted block larger than the destination")
		}
		return copy(dst, r.GetCiphertext()), nil
	}
	for {
		key, err := p.key(h)
		if err != nil {
			return 0, err
		}
		p.mu.RLock()
		if !p.stillCached(h, key) {
			p.mu.RUnlock()
			continue // wiped between key() and here: fetch again or fail
		}
		out, err := key.Seal(dst[:0], keyID, src, nil)
		p.mu.RUnlock()
		if err != nil {
			return 0, fmt.Errorf("byokd: %w", err)
		}
		return len(out), nil
	}
}

// Decrypt opens src into dst and returns the plaintext's length. A block
// that does not open is an error, never garbage.
func (p *Provider) Decrypt(h int, src, dst []byte) (int, error) {
	keyID, err := p.keyID(h)
	if err != nil {
		return 0, err
	}
	// Format 1 blocks (12 bytes less overhead) are still read: a database
	// written before format 2 recovers from its log with this plugin.
	n, err := block.PlaintextLen(src)
	if err != nil {
		return 0, p.doesNotOpen(keyID, fmt.Sprintf("%d bytes for keyid %q are not a byokd block (too short or an unknown format)", len(src), keyID))
	}
	if len(dst) < n {
		return 0, fmt.Errorf("byokd: a block of %d plaintext bytes does not fit %d bytes", n, len(dst))
	}
	if p.mode == keyprovider.Strict {
		if err := p.check(); err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), blockTimeout(len(src)))
		defer cancel()
		r, err := p.client.Decrypt(ctx, &pb.DecryptRequest{KeyId: keyID, Ciphertext: src})
		if err != nil {
			// byokd answers INVALID_ARGUMENT for a block that does not
			// open (its size was checked above).
			if e, ok := keyprovider.Err(err).(*keyprovider.Error); ok && e.Code == codes.InvalidArgument {
				return 0, p.doesNotOpen(keyID, fmt.Sprintf("block for keyid %q does not open (tampered, moved from another table, or another key): %s", keyID, e.Msg))
			}
			return 0, p.rpcErr("decrypt", err)
		}
		p.didOpen(keyID)
		return copy(dst, r.GetPlaintext()), nil
	}
	for {
		key, err := p.key(h)
		if err != nil {
			return 0, err
		}
		p.mu.RLock()
		if !p.stillCached(h, key) {
			p.mu.RUnlock()
			continue
		}
		out, err := key.Open(dst[:0], keyID, src, nil)
		p.mu.RUnlock()
		if err != nil {
			return 0, p.doesNotOpen(keyID, fmt.Sprintf("block for keyid %q does not open (tampered, moved from another table, or another key)", keyID))
		}
		p.didOpen(keyID)
		return len(out), nil
	}
}

func (p *Provider) stillCached(h int, key *block.Key) bool {
	e, ok := p.entries[h]
	return ok && e.key == key
}

func (p *Provider) keyID(h int) (string, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.entries[h]
	if !ok {
		return "", fmt.Errorf("byokd: unknown encryptor handle %d", h)
	}
	return e.keyID, nil
}

// blockTimeout bounds a strict-mode call on a block of n bytes: 10 s, and
// 1 s more per MiB, so that a hung byokd fails a page's call in 10 s while
// the largest block (64 MiB) has time to cross the socket twice on a busy
// host (it took 11 s under the race detector on a loaded 2-core machine).
func blockTimeout(n int) time.Duration {
	return 10*time.Second + time.Duration(n>>20)*time.Second
}

func (p *Provider) rpcErr(op string, err error) error {
	err = keyprovider.Err(err)
	switch {
	case errors.Is(err, keyprovider.ErrLocked):
		return locked(err.Error())
	case errors.Is(err, keyprovider.ErrUnavailable):
		return locked("byokd unreachable: " + err.Error())
	}
	return fmt.Errorf("byokd: %s: %s", op, describe(err))
}

// Release forgets a handle and wipes its key.
func (p *Provider) Release(h int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[h]; ok {
		p.forget(e)
		delete(p.entries, h)
	}
}

// Close wipes every key and stops watching.
func (p *Provider) Close() {
	// The watcher stops first: an UNLOCKED it read after the block below
	// would lift it, and keys fetched then would outlive the slab.
	if p.stop != nil {
		p.stop()
		<-p.done
	}
	p.block("closed")
	p.client.Close()
	p.mu.Lock()
	p.slab.destroy()
	p.mu.Unlock()
}

// slab hands out slots of mlocked, non-dumpable memory for key state
// (block.StateSize bytes each), a chunk at a time, so that many keys fit in
// a small RLIMIT_MEMLOCK.
type slab struct {
	chunks []*secmem.Buffer
	freed  [][]byte
}

const chunkSize = 16 << 10

func (s *slab) alloc() ([]byte, error) {
	if n := len(s.freed); n > 0 {
		slot := s.freed[n-1]
		s.freed = s.freed[:n-1]
		return slot, nil
	}
	size, err := block.StateSize()
	if err != nil {
		return nil, err
	}
	size = (size + 63) &^ 63
	b, err := secmem.New(max(chunkSize, size))
	if err != nil {
		return nil, err
	}
	s.chunks = append(s.chunks, b)
	mem := b.Bytes()
	for off := (len(mem)/size - 1) * size; off > 0; off -= size {
		s.freed = append(s.freed, mem[off:off+size:off+size])
	}
	return mem[:size:size], nil
}

func (s *slab) free(slot []byte) { s.freed = append(s.freed, slot) }

func (s *slab) destroy() {
	for _, b := range s.chunks {
		b.Destroy()
	}
	s.chunks, s.freed = nil, nil
}
