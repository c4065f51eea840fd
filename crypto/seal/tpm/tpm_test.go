// SPDX-License-Identifier: Apache-2.0

package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/sealtest"
	"github.com/byokd/byokd/internal/testenv"
)

// newSealer starts a fresh swtpm for t and returns a Sealer on it, wrapped
// by wrap if given; t.Cleanup closes the Sealer, then stops swtpm.
func newSealer(t testing.TB, wrap ...func(transport.TPMCloser) transport.TPMCloser) (*Sealer, *testenv.SWTPM) {
	t.Helper()
	sw := testenv.StartSWTPM(t)
	var tr = NewStream(sw.Conn)
	for _, w := range wrap {
		tr = w(tr)
	}
	s, err := New(tr)
	if err != nil {
		t.Fatalf("tpm.New on swtpm: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, sw
}

func randomDEK(t testing.TB) []byte {
	t.Helper()
	dek := make([]byte, seal.DEKSize)
	rand.Read(dek)
	return dek
}

func mustSeal(t testing.TB, s seal.Sealer, dek []byte) {
	t.Helper()
	if err := s.Seal(t.Context(), bytes.Clone(dek)); err != nil {
		t.Fatalf("Seal: %v", err)
	}
}

func wantKey(t testing.TB, dek, info []byte) []byte {
	t.Helper()
	k, err := datakey.Derive(dek, info)
	if err != nil {
		t.Fatal(err)
	}
	return k[:]
}

// withTPM runs fn with the Sealer's TPM connection, between its commands.
func withTPM(t *testing.T, s *Sealer, fn func(tpm transport.TPM)) {
	t.Helper()
	if err := s.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.release()
	fn(s.tpm)
}

// loaded counts the TPM's loaded handles of one type (transient objects,
// HMAC sessions).
func loaded(t *testing.T, s *Sealer, ht tpm2.TPMHT) int {
	t.Helper()
	var n int
	withTPM(t, s, func(tpm transport.TPM) {
		r, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 64,
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("GetCapability(handles %#x): %v", ht, err)
		}
		h, err := r.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		n = len(h.Handle)
	})
	return n
}

func TestConformance(t *testing.T) {
	sealtest.Run(t, func(t *testing.T) seal.Sealer {
		s, _ := newSealer(t)
		return s
	})
}

// A node can change backend without losing data: the same DEK sealed in
// the memory backend and in the TPM gives the same data key for every key
// id, and both equal crypto/datakey.
func TestMemoryAndTPMBackendsDeriveIdenticalDataKeys(t *testing.T) {
	tp, _ := newSealer(t)
	mem, err := seal.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	keyIDs := []string{
		"db/table-1", "db/table-2", "admin.system.users", "k", " ",
		"table:orders/index:by-date", strings.Repeat("k", datakey.MaxKeyIDLen),
	}
	clusters := []string{"cluster-1", strings.Repeat("c", datakey.MaxClusterIDLen)}
	for d := range 3 {
		dek := randomDEK(t)
		mustSeal(t, tp, dek)
		mustSeal(t, mem, dek)
		for _, cluster := range clusters {
			for _, keyID := range keyIDs {
				info, err := datakey.Info(cluster, keyID)
				if err != nil {
					t.Fatal(err)
				}
				var fromTPM, fromMem [32]byte
				if err := tp.Derive(t.Context(), info, fromTPM[:]); err != nil {
					t.Fatalf("tpm Derive: %v", err)
				}
				if err := mem.Derive(t.Context(), info, fromMem[:]); err != nil {
					t.Fatalf("memory Derive: %v", err)
				}
				if fromTPM != fromMem || !bytes.Equal(fromTPM[:], wantKey(t, dek, info)) {
					t.Fatalf("DEK %d, cluster %.10q, key id %.20q: tpm and memory data keys differ", d, cluster, keyID)
				}
			}
		}
	}
}

func TestWipeLeavesNoObjectOrSessionLoaded(t *testing.T) {
	s, _ := newSealer(t)
	if n := loaded(t, s, tpm2.TPMHTTransient); n != 0 {
		t.Fatalf("%d transient objects after New's self-test, want 0", n)
	}
	mustSeal(t, s, randomDEK(t))
	if o, h := loaded(t, s, tpm2.TPMHTTransient), loaded(t, s, tpm2.TPMHTHMACSession); o != 1 || h != 1 {
		t.Fatalf("after Seal: %d transient objects and %d sessions, want 1 and 1 (the primary is flushed)", o, h)
	}
	mustSeal(t, s, randomDEK(t))
	if o, h := loaded(t, s, tpm2.TPMHTTransient), loaded(t, s, tpm2.TPMHTHMACSession); o != 1 || h != 1 {
		t.Fatalf("after a second Seal: %d transient objects and %d sessions, want 1 and 1", o, h)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if o, h := loaded(t, s, tpm2.TPMHTTransient), loaded(t, s, tpm2.TPMHTHMACSession); o != 0 || h != 0 {
		t.Fatalf("after Wipe: %d transient objects and %d sessions, want none", o, h)
	}
	if err := s.Derive(t.Context(), []byte("x"), make([]byte, 32)); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: %v, want ErrWiped", err)
	}
}

func TestSealedObjectIsAFixedHMACKeyWithoutSensitiveDataOrigin(t *testing.T) {
	s, _ := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	withTPM(t, s, func(tpm transport.TPM) {
		r, err := tpm2.ReadPublic{ObjectHandle: s.obj}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Name.Buffer, s.objName) {
			t.Fatal("the loaded object's name is not the one the sealer authorises")
		}
		pub, err := r.OutPublic.Contents()
		if err != nil {
			t.Fatal(err)
		}
		a := pub.ObjectAttributes
		if pub.Type != tpm2.TPMAlgKeyedHash || !a.FixedTPM || !a.FixedParent || !a.UserWithAuth || !a.NoDA || !a.SignEncrypt ||
			a.SensitiveDataOrigin || a.Restricted || a.Decrypt || a.AdminWithPolicy || len(pub.AuthPolicy.Buffer) != 0 {
			t.Fatalf("object type %v attributes %+v", pub.Type, a)
		}
		kh, err := pub.Parameters.KeyedHashDetail()
		if err != nil {
			t.Fatal(err)
		}
		hm, err := kh.Scheme.Details.HMAC()
		if err != nil || kh.Scheme.Scheme != tpm2.TPMAlgHMAC || hm.HashAlg != tpm2.TPMAlgSHA256 {
			t.Fatalf("scheme %v (%v), want HMAC-SHA256", kh.Scheme.Scheme, err)
		}
	})
	if len(s.auth()) == 0 {
		t.Fatal("object auth value is empty")
	}
}

// recorder keeps a copy of every command and response.
type recorder struct {
	transport.TPMCloser
	mu      sync.Mutex
	traffic [][]byte
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	rsp, err := r.TPMCloser.Send(cmd)
	r.mu.Lock()
	r.traffic = append(r.traffic, bytes.Clone(cmd), bytes.Clone(rsp))
	r.mu.Unlock()
	return rsp, err
}

// containsAnyWindow reports whether any 8-byte run of secret appears in b.
func containsAnyWindow(b, secret []byte) bool {
	for i := 0; i+8 <= len(secret); i++ {
		if bytes.Contains(b, secret[i:i+8]) {
			return true
		}
	}
	return false
}

// Parameter encryption: the DEK and the object's auth value on the way in,
// every data key on the way out never appear in the clear in what goes
// through the transport (the TPM bus, the resource manager).
func TestDEKAuthValueAndDataKeysNeverCrossTheTransportInClear(t *testing.T) {
	rec := new(recorder)
	s, _ := newSealer(t, func(tr transport.TPMCloser) transport.TPMCloser { rec.TPMCloser = tr; return rec })
	dek := randomDEK(t)
	mustSeal(t, s, dek)
	auth := bytes.Clone(s.auth())
	secrets := [][]byte{dek, auth}
	for i := range 20 {
		info, err := datakey.Info("cluster-1", "db/table-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 32)
		if err := s.Derive(t.Context(), info, out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, wantKey(t, dek, info)) {
			t.Fatal("wrong data key")
		}
		secrets = append(secrets, out)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.traffic) < 2*(2+20) {
		t.Fatalf("only %d messages recorded", len(rec.traffic))
	}
	for i, m := range rec.traffic {
		for j, sec := range secrets {
			if containsAnyWindow(m, sec) {
				t.Fatalf("message %d carries 8 clear bytes of secret %d (0 DEK, 1 auth value, then data keys)", i, j)
			}
		}
	}
}

// A TPM reset (TPM_Init through swtpm's control channel, then
// TPM2_Startup(CLEAR), as at a host reboot) drops the object: Derive fails
// with ErrReseal, never answers, and sealing again recovers.
func TestTPMResetMakesDeriveFailWithErrResealUntilSealedAgain(t *testing.T) {
	s, sw := newSealer(t)
	dek := randomDEK(t)
	mustSeal(t, s, dek)
	out := make([]byte, 32)
	if err := s.Derive(t.Context(), []byte("x"), out); err != nil {
		t.Fatal(err)
	}
	if err := sw.Reset(); err != nil {
		t.Fatalf("reset swtpm: %v", err)
	}
	for range 2 { // the second time without a TPM command
		clear(out)
		err := s.Derive(t.Context(), []byte("x"), out)
		if !errors.Is(err, seal.ErrReseal) || !strings.Contains(err.Error(), "reset") {
			t.Fatalf("Derive after a TPM reset: %v, want ErrReseal saying the TPM was reset", err)
		}
		if !bytes.Equal(out, make([]byte, 32)) {
			t.Fatal("a failed Derive wrote to out")
		}
		t.Logf("Derive after reset: %v", err)
	}
	dek2 := randomDEK(t)
	mustSeal(t, s, dek2)
	if err := s.Derive(t.Context(), []byte("x"), out); err != nil || !bytes.Equal(out, wantKey(t, dek2, []byte("x"))) {
		t.Fatalf("Derive after sealing again: %v", err)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Derive(t.Context(), []byte("x"), out); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: %v, want ErrWiped", err)
	}
}

// After a reset, the sealer's handles may name another client's objects:
// here an HMAC key with an empty auth value at the very handle the sealed
// object had, and another session at the session's handle. Derive must
// fail, not return that key's HMAC, and must not flush what is not ours.
func TestTPMResetWithHandlesReusedByAnotherClientNeverGivesItsKey(t *testing.T) {
	s, sw := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	oldObj, oldSess := s.obj, s.sess
	if err := sw.Reset(); err != nil {
		t.Fatalf("reset swtpm: %v", err)
	}
	other := bytes.Repeat([]byte{0x42}, 32)
	var otherHandle tpm2.TPMHandle
	withTPM(t, s, func(tpm transport.TPM) {
		// Fill the slots below the one the sealed object had.
		for h := tpm2.TPMHandle(0x80000000); h < oldObj; h++ {
			if _, err := (tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}).Execute(tpm); err != nil {
				t.Fatal(err)
			}
		}
		r, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHOwner,
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: other}),
			}},
			InPublic: tpm2.New2B(objectTemplate),
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("other client's key: %v", err)
		}
		otherHandle = r.ObjectHandle
		// With parameter encryption like ours, so that only the HMAC
		// (keyed with our session key and auth value, over our object's
		// Name) tells the sessions apart.
		sess, _, err := tpm2.HMACSession(tpm, tpm2.TPMAlgSHA256, nonceSize, tpm2.AESEncryption(128, tpm2.EncryptOut))
		if err != nil {
			t.Fatal(err)
		}
		if r.ObjectHandle != oldObj || sess.Handle() != oldSess {
			t.Fatalf("test setup: other client got handles %#x, %#x, sealer had %#x, %#x", r.ObjectHandle, sess.Handle(), oldObj, oldSess)
		}
	})
	out := make([]byte, 32)
	err := s.Derive(t.Context(), []byte("x"), out)
	if !errors.Is(err, seal.ErrReseal) {
		t.Fatalf("Derive with the handles reused: %v, want ErrReseal", err)
	}
	if !errors.Is(err, tpm2.TPMRCBadAuth) && !errors.Is(err, tpm2.TPMRCAuthFail) {
		t.Errorf("Derive with the handles reused: %v, want the TPM to refuse our authorization", err)
	}
	t.Logf("Derive with the handles reused: %v", err)
	if !bytes.Equal(out, make([]byte, 32)) {
		t.Fatal("a failed Derive wrote to out")
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	withTPM(t, s, func(tpm transport.TPM) {
		if _, err := (tpm2.ReadPublic{ObjectHandle: otherHandle}).Execute(tpm); err != nil {
			t.Fatalf("the other client's object was flushed: %v", err)
		}
	})
}

// Without a reset, an object flushed behind the sealer's back (by another
// client of a TPM without a resource manager) is also ErrReseal.
func TestObjectFlushedBehindTheSealersBackFailsWithErrReseal(t *testing.T) {
	s, _ := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	withTPM(t, s, func(tpm transport.TPM) {
		if _, err := (tpm2.FlushContext{FlushHandle: s.obj}).Execute(tpm); err != nil {
			t.Fatal(err)
		}
	})
	err := s.Derive(t.Context(), []byte("x"), make([]byte, 32))
	if !errors.Is(err, seal.ErrReseal) || !strings.Contains(err.Error(), "no longer holds") {
		t.Fatalf("Derive: %v, want ErrReseal saying the object is gone", err)
	}
	mustSeal(t, s, randomDEK(t))
	if err := s.Derive(t.Context(), []byte("x"), make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
}

// An unnoticed reset: Wipe right after it must not flush the handles
// either, since they may be someone else's.
func TestWipeAfterResetFlushesNothing(t *testing.T) {
	s, sw := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	if err := sw.Reset(); err != nil {
		t.Fatal(err)
	}
	var other tpm2.TPMHandle
	withTPM(t, s, func(tpm transport.TPM) {
		r, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		other = r.ObjectHandle
	})
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := loaded(t, s, tpm2.TPMHTTransient); n != 1 {
		t.Fatalf("%d transient objects, want the other client's one (%#x)", n, other)
	}
}

// When the TPM goes away, Derive fails with an error that says so, not
// with a value and not with ErrReseal (sealing again cannot help).
func TestTPMGoneMakesDeriveFailClearly(t *testing.T) {
	sw := testenv.StartSWTPM(t)
	s, err := New(NewStream(sw.Conn))
	if err != nil {
		t.Fatal(err)
	}
	mustSeal(t, s, randomDEK(t))
	sw.Kill()
	out := make([]byte, 32)
	err = s.Derive(t.Context(), []byte("x"), out)
	if err == nil || errors.Is(err, seal.ErrReseal) || !strings.Contains(err.Error(), "tpm") {
		t.Fatalf("Derive with swtpm killed: %v", err)
	}
	if !bytes.Equal(out, make([]byte, 32)) {
		t.Fatal("a failed Derive wrote to out")
	}
	t.Logf("Derive with swtpm killed: %v", err)
	if err := s.Wipe(t.Context()); err == nil {
		t.Error("Wipe with swtpm killed reported no error: it could not flush the object")
	}
	if err := s.Derive(t.Context(), []byte("x"), out); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: %v, want ErrWiped (the host forgets the key regardless)", err)
	}
	_ = s.Close()
}

// faulty fails the next command with the given code, once.
type faulty struct {
	transport.TPMCloser
	cc atomic.Uint32
}

var errInjected = errors.New("injected transport failure")

func (f *faulty) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 {
		cc := uint32(cmd[6])<<24 | uint32(cmd[7])<<16 | uint32(cmd[8])<<8 | uint32(cmd[9])
		if cc != 0 && f.cc.CompareAndSwap(cc, 0) {
			return nil, errInjected
		}
	}
	return f.TPMCloser.Send(cmd)
}

// A Seal that fails part way leaves no key sealed — not even the one it was
// replacing — and nothing loaded, and the next Seal works.
func TestFailedSealLeavesNoKeyAndNothingLoaded(t *testing.T) {
	f := new(faulty)
	s, _ := newSealer(t, func(tr transport.TPMCloser) transport.TPMCloser { f.TPMCloser = tr; return f })
	for _, cc := range []tpm2.TPMCC{tpm2.TPMCCCreatePrimary, tpm2.TPMCCStartAuthSession, tpm2.TPMCCCreate, tpm2.TPMCCLoad} {
		mustSeal(t, s, randomDEK(t))
		f.cc.Store(uint32(cc))
		dek := randomDEK(t)
		if err := s.Seal(t.Context(), dek); !errors.Is(err, errInjected) {
			t.Fatalf("Seal failing at %v: %v", cc, err)
		}
		if !bytes.Equal(dek, make([]byte, 32)) {
			t.Fatalf("Seal failing at %v did not wipe the dek", cc)
		}
		if err := s.Derive(t.Context(), []byte("x"), make([]byte, 32)); !errors.Is(err, seal.ErrWiped) {
			t.Fatalf("Derive after Seal failed at %v: %v, want ErrWiped", cc, err)
		}
		if o, h := loaded(t, s, tpm2.TPMHTTransient), loaded(t, s, tpm2.TPMHTHMACSession); o != 0 || h != 0 {
			t.Fatalf("Seal failed at %v left %d objects and %d sessions loaded", cc, o, h)
		}
	}
	dek := randomDEK(t)
	mustSeal(t, s, dek)
	out := make([]byte, 32)
	if err := s.Derive(t.Context(), []byte("x"), out); err != nil || !bytes.Equal(out, wantKey(t, dek, []byte("x"))) {
		t.Fatalf("Derive after recovering: %v", err)
	}
}

// Seal and Derive queued behind a TPM command give up when their context
// ends; Seal still wipes the dek.
func TestCallsWaitingForTheTPMGiveUpWhenTheirContextEnds(t *testing.T) {
	s, _ := newSealer(t)
	dek := randomDEK(t)
	mustSeal(t, s, dek)
	if err := s.acquire(t.Context()); err != nil { // a command in flight
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.Derive(ctx, []byte("x"), make([]byte, 32)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Derive: %v, want DeadlineExceeded", err)
	}
	other := randomDEK(t)
	if err := s.Seal(ctx, other); !errors.Is(err, context.DeadlineExceeded) || !bytes.Equal(other, make([]byte, 32)) {
		t.Fatalf("Seal: %v, or dek not wiped", err)
	}
	s.release()
	out := make([]byte, 32)
	if err := s.Derive(t.Context(), []byte("x"), out); err != nil || !bytes.Equal(out, wantKey(t, dek, []byte("x"))) {
		t.Fatalf("Derive afterwards: %v", err)
	}
}

func TestDeriveRejectsInfoLongerThanDatakeyAllows(t *testing.T) {
	s, _ := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	if err := s.Derive(t.Context(), make([]byte, datakey.MaxInfoLen+1), make([]byte, 32)); err == nil {
		t.Fatal("Derive accepted an info longer than datakey.MaxInfoLen")
	}
	if err := s.Derive(t.Context(), make([]byte, datakey.MaxInfoLen), make([]byte, 32)); err != nil {
		t.Fatalf("Derive of the longest info: %v", err)
	}
}

func TestNewFailsWhenTheTPMDoesNotAnswer(t *testing.T) {
	sw := testenv.StartSWTPM(t)
	sw.Kill()
	if _, err := New(NewStream(sw.Conn)); err == nil || !strings.Contains(err.Error(), "self-test") {
		t.Fatalf("New on a killed swtpm: %v", err)
	}
}

func TestOpenMissingDeviceFails(t *testing.T) {
	if _, err := Open(t.TempDir() + "/tpmrm0"); err == nil {
		t.Fatal("Open of a missing device succeeded")
	}
}

// TestWipeOfAHungTPMFailsInsteadOfHanging: with swtpm stopped, Wipe gives
// up when its context ends, having forgotten the host's secrets; once the
// TPM answers again a Wipe succeeds and nothing is sealed.
func TestWipeOfAHungTPMFailsInsteadOfHanging(t *testing.T) {
	s, sw := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	if err := sw.Pause(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Wipe(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wipe of a hung TPM: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Wipe took %v with a 300ms context", d)
	}
	if host := s.mem.Bytes()[:cmdAt]; !bytes.Equal(host, make([]byte, cmdAt)) {
		t.Fatal("the auth value and session key are still in memory after the failed wipe")
	}
	// A second wipe waits for the first one's flush, within its own ctx.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	if err := s.Wipe(ctx2); err == nil {
		t.Fatal("a Wipe behind a hung one succeeded")
	}
	if err := sw.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatalf("Wipe after the TPM answers again: %v", err)
	}
	var out [32]byte
	if err := s.Derive(t.Context(), []byte("x"), out[:]); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after the wipe: %v, want ErrWiped", err)
	}
}

// TestWipeDuringAHungDeriveHandsOutNoKey: a Derive waits for a hung TPM
// when the node locks. Wipe cannot take the TPM, but forgets the host's
// secrets at once, and the Derive, once the TPM answers, returns no key.
func TestWipeDuringAHungDeriveHandsOutNoKey(t *testing.T) {
	s, sw := newSealer(t)
	mustSeal(t, s, randomDEK(t))
	if err := sw.Pause(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		out := make([]byte, 32)
		err := s.Derive(t.Context(), []byte("byokd/v1/c/t"), out)
		got <- result{out, err}
	}()
	time.Sleep(100 * time.Millisecond) // the Derive is in the TPM
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := s.Wipe(ctx); err == nil {
		t.Fatal("Wipe took a TPM that is busy with a hung command")
	}
	if host := s.mem.Bytes()[:cmdAt]; !bytes.Equal(host, make([]byte, cmdAt)) {
		t.Fatal("the auth value and session key are still in memory after the failed wipe")
	}
	if err := sw.Resume(); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err == nil {
		t.Fatalf("the hung Derive handed out a key after the wipe: %x", r.out)
	}
	var out [32]byte
	if err := s.Derive(t.Context(), []byte("x"), out[:]); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after the wipe: %v, want ErrWiped", err)
	}
}
