// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/byokd/byokd/crypto/secmem"
)

// DEKSize is the size of the data encryption key Key Protect creates and
// byokd expects back from unwrap.
const DEKSize = 32

// Unwrapped is Key Protect's answer to an unwrap.
type Unwrapped struct {
	// DEK holds the clear data encryption key (DEKSize bytes) in locked
	// memory. The caller owns it and must Destroy it.
	DEK *secmem.Buffer
	// Rewrapped is the DEK wrapped under the root key's newest version when
	// the ciphertext was made under an older one, to be stored; "" when
	// the ciphertext is current.
	Rewrapped string
	// KeyVersion is the root key version the unwrapped ciphertext was made
	// under (the answer's keyVersion.id).
	KeyVersion string
	// RewrappedVersion is the version Rewrapped was made under (the
	// answer's rewrappedKeyVersion.id).
	RewrappedVersion string
}

// StoredVersion is the root key version of the ciphertext the caller keeps
// after this answer: Rewrapped's when there is one. It comes from the
// unwrap answer itself, never from metadata read before it, which a
// rotation in between would make stale.
func (u *Unwrapped) StoredVersion() string {
	if u.Rewrapped != "" {
		return u.RewrappedVersion
	}
	return u.KeyVersion
}

// Wrapped is Key Protect's answer to creating a data encryption key.
type Wrapped struct {
	// DEK is the new clear key in locked memory; the caller destroys it.
	DEK        *secmem.Buffer
	Ciphertext string
	KeyVersion string
}

// Unwrap has Key Protect unwrap the wrapped DEK with the root key, bound to
// aad. The clear key never enters the Go heap: the answer is read into
// locked memory, decoded there and wiped.
func (c *Client) Unwrap(ctx context.Context, ciphertext string, aad []string) (*Unwrapped, error) {
	body, err := json.Marshal(struct {
		Ciphertext string   `json:"ciphertext"`
		AAD        []string `json:"aad,omitempty"`
	}{ciphertext, aad})
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w", err)
	}
	var out *Unwrapped
	err = c.secretAction(ctx, "unwrap", body, func(f map[string][]byte, dek *secmem.Buffer) error {
		out = &Unwrapped{DEK: dek}
		if err := stringField(f, "ciphertext", &out.Rewrapped, false); err != nil {
			return err
		}
		if err := versionField(f, "keyVersion", &out.KeyVersion); err != nil {
			return err
		}
		return versionField(f, "rewrappedKeyVersion", &out.RewrappedVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("unwrap with root key %s: %w", c.cfg.RootKeyID, err)
	}
	return out, nil
}

// WrapNew has Key Protect create a new 256-bit DEK and wrap it under the
// root key, bound to aad.
func (c *Client) WrapNew(ctx context.Context, aad []string) (*Wrapped, error) {
	body, err := json.Marshal(struct {
		AAD []string `json:"aad,omitempty"`
	}{aad})
	if err != nil {
		return nil, fmt.Errorf("wrap: %w", err)
	}
	var out *Wrapped
	err = c.secretAction(ctx, "wrap", body, func(f map[string][]byte, dek *secmem.Buffer) error {
		out = &Wrapped{DEK: dek}
		if err := stringField(f, "ciphertext", &out.Ciphertext, true); err != nil {
			return err
		}
		return versionField(f, "keyVersion", &out.KeyVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("create a data encryption key with root key %s: %w", c.cfg.RootKeyID, err)
	}
	return out, nil
}

// secretAction posts a key action whose answer carries "plaintext": the
// clear DEK. On a 200 it decodes plaintext into a new locked buffer and
// hands it, with the answer's other top-level fields, to use; if use fails
// the buffer is destroyed. Errors never carry the answer's body.
func (c *Client) secretAction(ctx context.Context, op string, body []byte,
	use func(fields map[string][]byte, dek *secmem.Buffer) error) error {
	return c.call(ctx, func(ctx context.Context, tok string) error {
		ans, err := c.exchange(ctx, tok, c.actionPath(op), body)
		if err != nil {
			return err
		}
		defer ans.destroy()
		if ans.status != 200 {
			return newAPIError(op, ans.status, ans.header, ans.body, time.Now())
		}
		fields, err := topFields(ans.body)
		if err != nil {
			return fmt.Errorf("%s: malformed answer: %w", op, err)
		}
		raw, ok := fields["plaintext"]
		if !ok {
			return fmt.Errorf("%s: the answer has no plaintext", op)
		}
		dek, err := decodeSecret(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if err := use(fields, dek); err != nil {
			dek.Destroy()
			return fmt.Errorf("%s: malformed answer: %w", op, err)
		}
		return nil
	})
}

// decodeSecret decodes a JSON string of standard base64 holding DEKSize
// bytes, from raw (in locked memory) into a new locked buffer. Every
// intermediate copy is in locked memory and wiped.
func decodeSecret(raw []byte) (*secmem.Buffer, error) {
	errBad := errors.New("the answer's plaintext is not a base64 string of a 32-byte key")
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' || len(raw) > 256 {
		return nil, errBad
	}
	scratch, err := secmem.New(2 * len(raw))
	if err != nil {
		return nil, fmt.Errorf("locked memory for the key: %w", err)
	}
	defer scratch.Destroy()
	s := scratch.Bytes()
	text, ok := unescapeASCII(raw[1:len(raw)-1], s[:len(raw)])
	if !ok {
		return nil, errBad
	}
	bin := s[len(raw):]
	n, err := base64.StdEncoding.Decode(bin, text)
	if err != nil || n != DEKSize {
		return nil, errBad
	}
	dek, err := secmem.New(DEKSize)
	if err != nil {
		return nil, fmt.Errorf("locked memory for the key: %w", err)
	}
	copy(dek.Bytes(), bin[:n])
	return dek, nil
}

// unescapeASCII decodes the inside of a JSON string that may only hold
// ASCII into dst, which must be at least as long as src. It refuses
// anything else.
func unescapeASCII(src, dst []byte) ([]byte, bool) {
	n := 0
	for i := 0; i < len(src); i++ {
		b := src[i]
		switch {
		case b == '\\':
			if i+1 >= len(src) {
				return nil, false
			}
			i++
			switch src[i] {
			case '"', '\\', '/':
				b = src[i]
			case 'u':
				if i+4 >= len(src) {
					return nil, false
				}
				var v [2]byte
				if _, err := hex.Decode(v[:], src[i+1:i+5]); err != nil || v[0] != 0 || v[1] >= 0x80 {
					return nil, false
				}
				b = v[1]
				i += 4
			default:
				return nil, false
			}
		case b < 0x20 || b >= 0x80 || b == '"':
			return nil, false
		}
		dst[n] = b
		n++
	}
	return dst[:n], true
}

// stringField decodes the JSON string f[name] into dst; a missing field is
// an error only when required.
func stringField(f map[string][]byte, name string, dst *string, required bool) error {
	raw, ok := f[name]
	if !ok {
		if required {
			return fmt.Errorf("no %s", name)
		}
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s is not a string", name)
	}
	return nil
}

// versionField reads the id of a key version object f[name], if present.
func versionField(f map[string][]byte, name string, dst *string) error {
	raw, ok := f[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s is not a key version", name)
	}
	*dst = v.ID
	return nil
}

// newCorrelationID returns a random UUID for the correlation-id header, so
// a request can be found in Key Protect's logs.
func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return strings.Join([]string{h[:8], h[8:12], h[12:16], h[16:20], h[20:]}, "-")
}
