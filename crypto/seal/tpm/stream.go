// SPDX-License-Identifier: Apache-2.0

package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// NewStream returns a transport for a TPM reached over a byte stream that
// carries raw TPM 2.0 commands and responses with no framing of its own:
// swtpm's --fd socket, or its TCP --server port in development (not the
// Microsoft simulator protocol). go-tpm's own ReadWriter transports take
// whatever one Read returns as the whole response; a stream may split it,
// so this one reads the 10-byte header and then as many bytes as its size
// field says. If rwc has SetDeadline (a net.Conn, a pollable *os.File),
// each command must complete within a minute. After an I/O error the stream is out
// of step with the TPM and every later Send fails with that error.
func NewStream(rwc io.ReadWriteCloser) transport.TPMCloser { return &stream{rwc: rwc} }

// commandTimeout bounds one command on a stream that supports deadlines.
// The slowest TPM commands (RSA key generation on a discrete TPM) take
// seconds; none of the ones this package sends do.
const commandTimeout = time.Minute

type stream struct {
	mu     sync.Mutex
	rwc    io.ReadWriteCloser
	broken error
}

const (
	headerSize = 10
	// maxResponse bounds a response's size field (TPM2_MAX_RESPONSE_SIZE
	// is 4 KiB on common TPMs).
	maxResponse = 64 << 10
)

func (s *stream) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return nil, s.broken
	}
	rsp, err := s.exchange(cmd)
	if err != nil {
		s.broken = fmt.Errorf("tpm stream unusable after an earlier error: %w", err)
		return nil, err
	}
	return rsp, nil
}

func (s *stream) exchange(cmd []byte) ([]byte, error) {
	if d, ok := s.rwc.(interface{ SetDeadline(time.Time) error }); ok {
		if err := d.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
			return nil, fmt.Errorf("tpm stream deadline: %w", err)
		}
	}
	if _, err := s.rwc.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpm write: %w", err)
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(s.rwc, hdr[:]); err != nil {
		return nil, fmt.Errorf("tpm read: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, errors.New("tpm read: malformed response size")
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.rwc, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("tpm read: %w", err)
	}
	return rsp, nil
}

func (s *stream) Close() error { return s.rwc.Close() }
