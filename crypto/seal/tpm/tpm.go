// Package tpm seals the DEK into a TPM 2.0 as a keyed-hash object, so that
// data keys are derived by TPM2_HMAC inside the TPM and the clear DEK leaves
// host memory once sealed.
package tpm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
)

// Sealer is the TPM backend. The DEK is the sensitive part of an HMAC-SHA256
// keyed-hash object created under the owner hierarchy's ECC P-256 storage
// primary (the TCG reference SRK template, re-derived from the owner seed on
// every Seal and flushed once the object is loaded). The object's auth value
// is 32 random bytes kept only in this process: another process with access
// to the TPM cannot use the loaded object. Wipe flushes the object.
type Sealer struct {
	mu     sync.Mutex // serialises TPM commands and guards the fields
	tpm    transport.TPMCloser
	handle tpm2.TPMHandle // loaded object, 0 when nothing is sealed
	name   tpm2.TPM2BName
	auth   []byte
	closed bool
}

var _ seal.Sealer = (*Sealer)(nil)

// Open opens the TPM resource manager device (/dev/tpmrm0) and checks it
// answers.
func Open(path string) (*Sealer, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s, err := New(t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return s, nil
}

// New uses an open TPM connection; Close closes it.
func New(t transport.TPMCloser) (*Sealer, error) {
	if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(t); err != nil {
		return nil, fmt.Errorf("tpm does not answer: %w", err)
	}
	return &Sealer{tpm: t}, nil
}

// Name is "tpm".
func (s *Sealer) Name() string { return "tpm" }

func hmacTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:     true,
			FixedParent:  true,
			UserWithAuth: true,
			NoDA:         true,
			SignEncrypt:  true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
	}
}

// Seal moves dek into the TPM and wipes the caller's slice, whatever
// happens. A DEK sealed before is flushed first.
func (s *Sealer) Seal(ctx context.Context, dek []byte) (err error) {
	defer secmem.Wipe(dek)
	if len(dek) != seal.DEKSize {
		return fmt.Errorf("seal: dek is %d bytes, want %d", len(dek), seal.DEKSize)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("seal: %w", seal.ErrClosed)
	}
	s.flushLocked()

	primary, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(s.tpm)
	if err != nil {
		return fmt.Errorf("seal: create the storage primary: %w", err)
	}
	defer func() { _, _ = (tpm2.FlushContext{FlushHandle: primary.ObjectHandle}).Execute(s.tpm) }()

	auth := make([]byte, 32)
	if _, err := rand.Read(auth); err != nil {
		return fmt.Errorf("seal: auth value: %w", err)
	}
	// The command buffer go-tpm marshals holds the DEK until the garbage
	// collector reuses it; that copy is beyond this package's reach.
	sensitive := make([]byte, len(dek))
	copy(sensitive, dek)
	defer secmem.Wipe(sensitive)
	parent := tpm2.AuthHandle{Handle: primary.ObjectHandle, Name: primary.Name, Auth: tpm2.PasswordAuth(nil)}
	created, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: sensitive}),
		}},
		InPublic: tpm2.New2B(hmacTemplate()),
	}.Execute(s.tpm)
	if err != nil {
		secmem.Wipe(auth)
		return fmt.Errorf("seal: create the keyed-hash object: %w", err)
	}
	loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(s.tpm)
	if err != nil {
		secmem.Wipe(auth)
		return fmt.Errorf("seal: load the keyed-hash object: %w", err)
	}
	s.handle, s.name, s.auth = loaded.ObjectHandle, loaded.Name, auth
	return nil
}

// Derive computes HKDF-Expand-SHA256(DEK, info) for 32 bytes — one
// HMAC-SHA256 of info || 0x01 — inside the TPM.
func (s *Sealer) Derive(ctx context.Context, info []byte, out []byte) error {
	if len(out) != seal.DEKSize {
		return fmt.Errorf("derive: out is %d bytes, want %d", len(out), seal.DEKSize)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("derive: %w", err)
	}
	if len(info)+1 > 1024 {
		return fmt.Errorf("derive: info of %d bytes is longer than a TPM buffer", len(info))
	}
	msg := make([]byte, 0, len(info)+1)
	msg = append(append(msg, info...), 0x01)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("derive: %w", seal.ErrClosed)
	}
	if s.handle == 0 {
		return fmt.Errorf("derive: %w", seal.ErrWiped)
	}
	r, err := tpm2.Hmac{
		Handle:  tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(s.auth)},
		Buffer:  tpm2.TPM2BMaxBuffer{Buffer: msg},
		HashAlg: tpm2.TPMAlgSHA256,
	}.Execute(s.tpm)
	if err != nil {
		return fmt.Errorf("derive: tpm2_hmac: %w", err)
	}
	if len(r.OutHMAC.Buffer) != seal.DEKSize {
		secmem.Wipe(r.OutHMAC.Buffer)
		return fmt.Errorf("derive: the TPM returned %d bytes", len(r.OutHMAC.Buffer))
	}
	copy(out, r.OutHMAC.Buffer)
	secmem.Wipe(r.OutHMAC.Buffer)
	return nil
}

func (s *Sealer) flushLocked() {
	if s.handle != 0 {
		_, _ = (tpm2.FlushContext{FlushHandle: s.handle}).Execute(s.tpm)
	}
	s.handle, s.name = 0, tpm2.TPM2BName{}
	secmem.Wipe(s.auth)
	s.auth = nil
}

// Wipe flushes the keyed-hash object: the DEK is gone from the TPM, and
// Derive fails with seal.ErrWiped until the next Seal.
func (s *Sealer) Wipe(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.flushLocked()
	return nil
}

// Close wipes and closes the TPM connection.
func (s *Sealer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.flushLocked()
	s.closed = true
	return s.tpm.Close()
}

// stream speaks the TPM command protocol over a byte stream (a swtpm
// socket): go-tpm's ReadWriter transport reads a response with one Read,
// which a stream may split.
type stream struct {
	mu  sync.Mutex
	rwc io.ReadWriteCloser
}

// NewStream wraps a connection to a TPM that sends and receives raw TPM 2.0
// commands on a stream, such as swtpm's --fd or --server socket.
func NewStream(rwc io.ReadWriteCloser) transport.TPMCloser { return &stream{rwc: rwc} }

const headerSize = 10

// maxResponse bounds what a TPM may send back (TPM2_MAX_COMMAND_SIZE is 4 KiB
// on most TPMs).
const maxResponse = 64 << 10

func (s *stream) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.rwc.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpm write: %w", err)
	}
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(s.rwc, hdr); err != nil {
		return nil, fmt.Errorf("tpm read: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, errors.New("tpm read: malformed response size")
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.rwc, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("tpm read: %w", err)
	}
	return rsp, nil
}

func (s *stream) Close() error { return s.rwc.Close() }
