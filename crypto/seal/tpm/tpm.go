// SPDX-License-Identifier: Apache-2.0

// Package tpm seals the DEK into a TPM 2.0 keyed-hash object, so that data keys are derived by TPM2_HMAC inside the TPM.
package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
)

// Sealer is the TPM backend.
//
// Seal re-derives the owner hierarchy's storage primary — the TCG reference
// ECC P-256 SRK template, chosen over RSA-2048 because a discrete TPM makes
// it in well under a second where RSA key generation can take several —
// starts a salted HMAC session with it, creates under it a keyed-hash
// object whose sensitive data is the DEK (HMAC-SHA256 scheme, sign,
// fixedTPM, fixedParent, noDA, userWithAuth, no sensitiveDataOrigin since
// the data is ours), loads the object and flushes the primary. What stays
// in the TPM is one object and one session; the object's private blob is
// dropped once loaded, so the DEK cannot be loaded again from anything the
// process keeps. Nothing is made persistent.
//
// The object's auth value is 32 random bytes made at each Seal and kept
// only in this process's mlocked memory, not empty: another client of the
// same TPM (a raw /dev/tpm0 user, anyone on a shared swtpm) that finds the
// handle cannot use the object, and after a TPM reset a handle that now
// names someone else's object fails authorization instead of answering.
// The auth value never crosses the bus: the session proves knowledge of it
// with an HMAC. The same session encrypts the DEK on its way in and every
// data key on its way out, and its response HMAC is checked, so a data key
// is only ever returned if it came from the sealed object.
//
// Derive is TPM2_HMAC(object, info || 0x01): one HKDF-Expand-SHA256 block,
// bit-identical to crypto/datakey.Derive with the same DEK. Besides the
// caller's slice, which Seal wipes, the clear DEK is on the host only in
// the command buffer, in mlocked memory, where it is encrypted for the TPM
// at once and wiped once sent.
//
// When the TPM loses the object — a TPM reset, which bumps its reset
// count, or the object or session no longer loaded — Derive fails with
// seal.ErrReseal until the next Seal: the caller unwraps the DEK again.
//
// Limits: root on the node can use the object through this process while
// it is loaded, as it can read the memory backend's key; an active
// interposer on the TPM bus who substitutes the primary's public key
// defeats the session encryption (no EK certificate is checked). The owner
// hierarchy must have an empty password.
type Sealer struct {
	// sem is a one-slot semaphore rather than a sync.Mutex so that a Seal
	// or Derive queued behind a slow TPM command gives up when its context
	// ends. Holding it serialises TPM commands and guards every field
	// below; acquire takes it, release gives it back, and a function
	// named ...SemHeld must be called with it held.
	sem chan struct{}
	tpm transport.TPMCloser
	// mem is mlocked, non-dumpable memory: the object's auth value, the
	// session key, and the buffer commands are built in (see memLayout).
	mem      *secmem.Buffer
	template []byte // the keyed-hash object's TPMT_PUBLIC

	obj         tpm2.TPMHandle // the keyed-hash object, 0 when no key is sealed
	objName     []byte
	authLen     int // auth value length once trailing zeros are dropped
	sess        tpm2.TPMHandle
	nonceCaller [nonceSize]byte
	nonceTPM    [nonceSize]byte
	// The TPM's reset and restart counts when the key was sealed: a
	// change means the TPM forgot the object.
	resetCount, restartCount uint32
	void                     error // why the sealed key was lost, nil if it was not
	closed                   bool

	// revoked is set by a Wipe that finds a command hung in the TPM, and
	// cleared by the next successful Seal: no Derive hands out a key in
	// between, not even the one that was hung when the node locked.
	revoked atomic.Bool
}

var _ seal.Sealer = (*Sealer)(nil)

// memLayout: offsets in mem.
const (
	authAt       = 0
	authSize     = 32
	sessionKeyAt = authAt + authSize
	cmdAt        = sessionKeyAt + sha256.Size
	memSize      = 4096 // one page; commands are at most a few hundred bytes
)

func (s *Sealer) auth() []byte       { return s.mem.Bytes()[authAt : authAt+s.authLen] }
func (s *Sealer) sessionKey() []byte { return s.mem.Bytes()[sessionKeyAt:cmdAt] }
func (s *Sealer) cmd() []byte        { return s.mem.Bytes()[cmdAt:] }

// objectTemplate is the public area of the object that holds the DEK.
var objectTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgKeyedHash,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:    true, // never duplicated
		FixedParent: true,
		// The auth value, proven by an HMAC session; no policy, so the
		// admin role (needed to duplicate or change auth) is unreachable.
		UserWithAuth: true,
		// A wrong auth is a reset or a bug, never worth locking the TPM's
		// dictionary-attack counter for everyone; 2^256 auth values cannot
		// be guessed anyway.
		NoDA:        true,
		SignEncrypt: true, // TPM2_HMAC needs sign
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
		Scheme: tpm2.TPMTKeyedHashScheme{
			Scheme:  tpm2.TPMAlgHMAC,
			Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
		},
	}),
}

// Open opens the TPM device at path — /dev/tpmrm0, the kernel's resource
// manager, in production — and returns New's Sealer on it.
func Open(path string) (*Sealer, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tpm: %w", err)
	}
	return New(t)
}

// selfTestInfo is the info of the self-test's derivation.
var selfTestInfo = []byte("byokd/tpm/self-test")

// selfTestTimeout bounds the self-test's waits (retries of a busy TPM).
const selfTestTimeout = time.Minute

// New returns a Sealer on an open TPM connection, after a self-test: it
// seals a random throwaway key, derives from it, compares with
// crypto/datakey and wipes it, so a TPM that lacks something this backend
// needs is found at start, not at the first unlock. New owns t: Close
// closes it, and so does New when it fails.
func New(t transport.TPMCloser) (*Sealer, error) {
	mem, err := secmem.New(memSize)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("tpm sealer: %w", err)
	}
	s := &Sealer{
		sem:      make(chan struct{}, 1),
		tpm:      t,
		mem:      mem,
		template: tpm2.Marshal(objectTemplate),
	}
	if err := s.selfTest(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("tpm self-test: %w", err)
	}
	return s, nil
}

func (s *Sealer) selfTest() error {
	ctx, cancel := context.WithTimeout(context.Background(), selfTestTimeout)
	defer cancel()
	var dek [seal.DEKSize]byte
	rand.Read(dek[:])
	want, err := datakey.Derive(dek[:], selfTestInfo)
	if err != nil {
		return err
	}
	defer secmem.Wipe(want[:])
	if err := s.Seal(ctx, dek[:]); err != nil {
		return err
	}
	var got [seal.DEKSize]byte
	defer secmem.Wipe(got[:])
	derr := s.Derive(ctx, selfTestInfo, got[:])
	werr := s.Wipe(ctx)
	switch {
	case derr != nil:
		return derr
	case subtle.ConstantTimeCompare(got[:], want[:]) != 1:
		return errors.New("tpm2_hmac differs from hkdf-expand-sha256 computed on the host")
	}
	return werr
}

// Name returns "tpm".
func (s *Sealer) Name() string { return "tpm" }

// acquire takes s.sem, or gives up when ctx ends.
func (s *Sealer) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release gives s.sem back.
func (s *Sealer) release() { <-s.sem }

// Seal moves dek into the TPM, replacing the key sealed before, and wipes
// dek whatever happens. The old key is flushed first: if Seal fails, no key
// is sealed and Derive returns seal.ErrWiped, never a key from the DEK the
// caller meant to replace.
func (s *Sealer) Seal(ctx context.Context, dek []byte) error {
	defer secmem.Wipe(dek)
	if err := seal.CheckSeal(ctx, dek); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	defer s.release()
	if s.closed {
		return fmt.Errorf("seal: %w", seal.ErrClosed)
	}
	if err := s.forgetSemHeld(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if err := s.sealSemHeld(ctx, dek); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	s.revoked.Store(false)
	return nil
}

// sealSemHeld creates and loads a keyed-hash object holding dek under the
// storage primary, through a session salted by it; s.sem must be held.
func (s *Sealer) sealSemHeld(ctx context.Context, dek []byte) (err error) {
	clock, err := tpm2.ReadClock{}.Execute(s.tpm)
	if err != nil {
		return fmt.Errorf("tpm2_readclock: %w", err)
	}
	primary, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner, // empty password
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(s.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return fmt.Errorf("create the storage primary: the owner hierarchy has a password, this backend needs it empty: %w", err)
		}
		return fmt.Errorf("create the storage primary: %w", err)
	}
	// The primary is only the parent and the session's salt key; it is
	// the TPM's to re-derive, not a secret, and a failed flush only costs
	// a slot until the connection closes.
	defer func() { _ = s.flush(primary.ObjectHandle) }()
	pub, err := primary.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("storage primary public area: %w", err)
	}
	if err := s.startSessionSemHeld(primary.ObjectHandle, pub); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = s.flush(s.sess)
			s.sess, s.authLen = 0, 0
			secmem.Wipe(s.mem.Bytes()[:cmdAt])
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}

	rand.Read(s.mem.Bytes()[authAt : authAt+authSize])
	s.authLen = len(trimZeros(s.mem.Bytes()[authAt : authAt+authSize]))
	parent := entity{handle: primary.ObjectHandle, name: primary.Name.Buffer} // empty auth

	// TPM2_Create: inSensitive {userAuth, data}, inPublic, outsideInfo,
	// creationPCR. The DEK is written straight into the mlocked command
	// buffer, where authorized encrypts it in place.
	p := s.cmd()[paramsAt:]
	n := 2
	n += put2B(p[n:], s.auth())
	n += put2B(p[n:], dek)
	binary.BigEndian.PutUint16(p, uint16(n-2))
	n += put2B(p[n:], s.template)
	n += put2B(p[n:], nil)               // outsideInfo
	binary.BigEndian.PutUint32(p[n:], 0) // creationPCR: no PCRs
	n += 4
	created, err := s.authorized(ctx, tpm2.TPMCCCreate, parent, attrContinue|attrDecrypt, n, 0)
	if err != nil {
		return fmt.Errorf("tpm2_create the keyed-hash object: %w", err)
	}
	private, err := first2B(created.params)
	if err != nil {
		return fmt.Errorf("tpm2_create outPrivate: %w", err)
	}
	public, err := first2B(created.params[2+len(private):])
	if err != nil {
		return fmt.Errorf("tpm2_create outPublic: %w", err)
	}
	// The TPM may only fill in unique (a keyed digest of the DEK), the
	// last field, which is empty in the template.
	if len(public) < len(s.template) || !bytes.Equal(public[:len(s.template)-2], s.template[:len(s.template)-2]) {
		return errors.New("tpm2_create returned a public area that is not the template's")
	}
	want := make([]byte, 2, 2+sha256.Size)
	binary.BigEndian.PutUint16(want, algSHA256)
	sum := sha256.Sum256(public)
	want = append(want, sum[:]...)

	if 4+len(private)+len(public) > len(p) {
		return errors.New("tpm2_create returned blobs too large to load")
	}
	n = put2B(p, private)
	n += put2B(p[n:], public)
	loaded, err := s.authorized(ctx, tpm2.TPMCCLoad, parent, attrContinue, n, 1)
	if err != nil {
		return fmt.Errorf("tpm2_load the keyed-hash object: %w", err)
	}
	name, err := first2B(loaded.params)
	if err != nil || !bytes.Equal(name, want) {
		_ = s.flush(loaded.handle)
		return errors.New("tpm2_load returned a name that is not the created object's")
	}
	s.obj, s.objName = loaded.handle, want
	s.resetCount = clock.CurrentTime.ClockInfo.ResetCount
	s.restartCount = clock.CurrentTime.ClockInfo.RestartCount
	return nil
}

// aes128CFB is the session's parameter encryption.
var aes128CFB = tpm2.TPMTSymDef{
	Algorithm: tpm2.TPMAlgAES,
	KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
	Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
}

// startSessionSemHeld starts an unbound HMAC session salted with the loaded
// key saltKey and stores its handle, nonceTPM and session key; s.sem must
// be held.
func (s *Sealer) startSessionSemHeld(saltKey tpm2.TPMHandle, pub *tpm2.TPMTPublic) error {
	kem, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return fmt.Errorf("session salt key: %w", err)
	}
	salt, encSalt, err := tpm2.CreateEncryptedSalt(rand.Reader, kem)
	if err != nil {
		return fmt.Errorf("session salt: %w", err)
	}
	defer secmem.Wipe(salt)
	rand.Read(s.nonceCaller[:])
	rsp, err := tpm2.StartAuthSession{
		TPMKey:        saltKey,
		Bind:          tpm2.TPMRHNull,
		NonceCaller:   tpm2.TPM2BNonce{Buffer: s.nonceCaller[:]},
		EncryptedSalt: tpm2.TPM2BEncryptedSecret{Buffer: encSalt},
		SessionType:   tpm2.TPMSEHMAC,
		Symmetric:     aes128CFB,
		AuthHash:      tpm2.TPMAlgSHA256,
	}.Execute(s.tpm)
	if err != nil {
		return fmt.Errorf("tpm2_startauthsession: %w", err)
	}
	handle := tpm2.TPMHandle(rsp.SessionHandle.HandleValue())
	if len(rsp.NonceTPM.Buffer) != nonceSize {
		_ = s.flush(handle)
		return fmt.Errorf("tpm2_startauthsession: nonceTPM is %d bytes, want %d", len(rsp.NonceTPM.Buffer), nonceSize)
	}
	s.sess = handle
	copy(s.nonceTPM[:], rsp.NonceTPM.Buffer)
	key := sessionKeyFromSalt(salt, s.nonceTPM[:], s.nonceCaller[:])
	copy(s.sessionKey(), key[:])
	secmem.Wipe(key[:])
	return nil
}

// Derive computes HKDF-Expand-SHA256(DEK, info) — the single block
// HMAC-SHA256(DEK, info || 0x01) — inside the TPM and writes it to out,
// which must be 32 bytes. info is at most datakey.MaxInfoLen bytes, as for
// the other backends. Errors: seal.ErrWiped when no key is sealed,
// seal.ErrReseal when the TPM lost the sealed key, seal.ErrClosed after
// Close, the context's error if it ends while the call waits for the TPM.
func (s *Sealer) Derive(ctx context.Context, info []byte, out []byte) error {
	if err := seal.CheckDerive(ctx, info, out); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("derive: %w", err)
	}
	defer s.release()
	switch {
	case s.closed:
		return fmt.Errorf("derive: %w", seal.ErrClosed)
	case s.revoked.Load():
		return fmt.Errorf("derive: %w", seal.ErrWiped)
	case s.void != nil:
		return fmt.Errorf("derive: %w: %w", seal.ErrReseal, s.void)
	case s.obj == 0:
		return fmt.Errorf("derive: %w", seal.ErrWiped)
	}
	// TPM2_HMAC: buffer = info || 0x01, hashAlg.
	p := s.cmd()[paramsAt:]
	binary.BigEndian.PutUint16(p, uint16(len(info)+1))
	n := 2 + copy(p[2:], info)
	p[n] = 0x01
	n++
	binary.BigEndian.PutUint16(p[n:], algSHA256)
	n += 2
	rep, err := s.authorized(ctx, tpm2.TPMCCHMAC, entity{handle: s.obj, name: s.objName, auth: s.auth()}, attrContinue|attrEncrypt, n, 0)
	if err != nil {
		return fmt.Errorf("derive: tpm2_hmac: %w", s.lostSemHeld(err))
	}
	defer secmem.Wipe(rep.params)
	mac, err := first2B(rep.params)
	if err != nil || len(mac) != seal.DEKSize {
		return fmt.Errorf("derive: tpm2_hmac did not return a %d-byte digest", seal.DEKSize)
	}
	if s.revoked.Load() {
		// Wiped while the TPM worked on this command.
		return fmt.Errorf("derive: %w", seal.ErrWiped)
	}
	copy(out, mac)
	return nil
}

// gone lists the answers that say our object or session is no longer
// loaded or no longer ours: not loaded, a handle of the wrong kind, or an
// HMAC the TPM does not accept (the session or the object at the handle is
// another one).
var gone = []error{tpm2.TPMRCReferenceH0, tpm2.TPMRCReferenceS0, tpm2.TPMRCHandle, tpm2.TPMRCBadAuth, tpm2.TPMRCAuthFail}

// lostSemHeld decides, after a command on the sealed object failed with
// err, whether the TPM has lost the object. If so it voids the sealed
// state, so that Derive answers seal.ErrReseal until the next Seal, and
// returns an error that wraps seal.ErrReseal; otherwise it returns err.
// s.sem must be held.
func (s *Sealer) lostSemHeld(err error) error {
	clock, cerr := tpm2.ReadClock{}.Execute(s.tpm)
	var why error
	switch {
	case errors.Is(cerr, tpm2.TPMRCInitialize):
		why = fmt.Errorf("the tpm was reset and has not been started again: %w", err)
	case cerr != nil:
		return err // the TPM does not answer: resealing would not help
	case clock.CurrentTime.ClockInfo.ResetCount != s.resetCount || clock.CurrentTime.ClockInfo.RestartCount != s.restartCount:
		why = fmt.Errorf("the tpm was reset since the key was sealed (reset count %d, now %d; restart count %d, now %d): %w",
			s.resetCount, clock.CurrentTime.ClockInfo.ResetCount, s.restartCount, clock.CurrentTime.ClockInfo.RestartCount, err)
	default:
		lost := false
		for _, rc := range gone {
			lost = lost || errors.Is(err, rc)
		}
		if !lost {
			return err
		}
		why = fmt.Errorf("the tpm no longer holds the sealed object or its session: %w", err)
	}
	// Our handles may name someone else's object or session now: drop them
	// without flushing.
	s.obj, s.sess, s.objName, s.authLen = 0, 0, nil, 0
	secmem.Wipe(s.mem.Bytes()[:cmdAt])
	s.void = why
	return fmt.Errorf("%w: %w", seal.ErrReseal, why)
}

// forgetSemHeld flushes the sealed object and the session, unless the TPM
// lost them, and wipes the host's secrets. The host state is forgotten even
// if a flush fails. s.sem must be held.
func (s *Sealer) forgetSemHeld() error {
	// The host's secrets go first: the flushes below wait for the TPM,
	// which may not answer.
	secmem.Wipe(s.mem.Bytes()[:cmdAt])
	var errs []error
	if s.void == nil && s.obj != 0 {
		// After an unnoticed TPM reset our handles could name another
		// client's object: flush only if the TPM was not reset.
		clock, err := tpm2.ReadClock{}.Execute(s.tpm)
		switch {
		case errors.Is(err, tpm2.TPMRCInitialize):
		case err == nil && (clock.CurrentTime.ClockInfo.ResetCount != s.resetCount || clock.CurrentTime.ClockInfo.RestartCount != s.restartCount):
		default:
			if err := s.flush(s.obj); err != nil && !notLoaded(err) {
				errs = append(errs, fmt.Errorf("flush the sealed object: %w", err))
			}
			if err := s.flush(s.sess); err != nil && !notLoaded(err) {
				errs = append(errs, fmt.Errorf("flush the session: %w", err))
			}
		}
	}
	s.obj, s.sess, s.objName, s.authLen, s.void = 0, 0, nil, 0, nil
	secmem.Wipe(s.mem.Bytes()[:cmdAt])
	return errors.Join(errs...)
}

// notLoaded reports whether FlushContext failed because the handle was not
// loaded: the object is gone either way.
func notLoaded(err error) bool {
	return errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0)
}

func (s *Sealer) flush(h tpm2.TPMHandle) error {
	_, err := tpm2.FlushContext{FlushHandle: h}.Execute(s.tpm)
	return err
}

// hungAfter is how long Wipe waits for a command in flight before it
// revokes the sealed key without the semaphore: a TPM answers a command in
// milliseconds.
const hungAfter = 100 * time.Millisecond

// wipeHostSecrets zeroes the auth value and the session key. Wipe calls it
// without the semaphore, so as not to wait for a hung TPM: a command in
// flight then fails its answer's check.
func (s *Sealer) wipeHostSecrets() {
	if mem := s.mem.Bytes(); mem != nil {
		secmem.Wipe(mem[:cmdAt])
	}
}

// Wipe forgets the auth value and the session key, then flushes the sealed
// object and its session from the TPM; Derive returns seal.ErrWiped until
// the next Seal. When a command in flight does not end within hungAfter,
// the host's secrets go first, without waiting for it. It waits for a command in flight and
// for the flushes only as long as ctx allows: a TPM that does not answer
// makes Wipe fail, never hang. An error means the TPM was busy or a flush
// failed; the kernel's resource manager flushes what is left when the
// device is closed, and without the auth value the object cannot be used.
func (s *Sealer) Wipe(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-time.After(hungAfter):
		// A command in flight does not end: no Derive may hand out a key
		// from now on, and the host's secrets go without waiting. The
		// command cannot check its answer without them.
		s.revoked.Store(true)
		s.wipeHostSecrets()
		if err := s.acquire(ctx); err != nil {
			return fmt.Errorf("wipe: the tpm is busy with a command that does not end: %w", err)
		}
	case <-ctx.Done():
		s.revoked.Store(true)
		s.wipeHostSecrets()
		return fmt.Errorf("wipe: the tpm is busy with a command that does not end: %w", ctx.Err())
	}
	done := make(chan error, 1)
	go func() {
		defer s.release()
		if s.closed {
			done <- nil
			return
		}
		done <- s.forgetSemHeld()
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("wipe: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wipe: the tpm does not answer: %w", ctx.Err())
	}
}

// Close wipes, closes the TPM connection and frees the mlocked memory.
// Closing twice is not an error.
func (s *Sealer) Close() error {
	s.sem <- struct{}{}
	defer s.release()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.forgetSemHeld()
	if cerr := s.tpm.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close the tpm: %w", cerr))
	}
	s.mem.Destroy()
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
