// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
)

// The wrapped form of a DEK, like the service's: base64 of a small JSON
// object naming the key version ("handle") with the AES-256-GCM ciphertext
// and nonce. The GCM additional data binds the key id, the key version and
// the caller's AAD list, so a ciphertext unwraps only under the same key, with
// the same AAD, and a tampered one fails.
type envelope struct {
	Ciphertext string `json:"ciphertext"`
	IV         string `json:"iv"`
	Version    string `json:"version"`
	Handle     string `json:"handle"`
}

const envelopeVersion = "kpemu-1"

var errEnvelope = errors.New("malformed ciphertext")

func gcmAAD(keyID, versionID string, aad []string) []byte {
	var b []byte
	put := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	put("kpemu/wrap/v1")
	put(keyID)
	put(versionID)
	for _, a := range aad {
		put(a)
	}
	return b
}

func newGCM(material []byte) cipher.AEAD {
	block, err := aes.NewCipher(material)
	if err != nil {
		panic("kpemu: bad key material length") // material is always 32 bytes for root keys
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("kpemu: " + err.Error())
	}
	return g
}

func seal(keyID string, v *version, plaintext []byte, aad []string) string {
	g := newGCM(v.Material)
	nonce := randomBytes(g.NonceSize())
	ct := g.Seal(nil, nonce, plaintext, gcmAAD(keyID, v.ID, aad))
	env := envelope{
		Ciphertext: base64.StdEncoding.EncodeToString(ct),
		IV:         base64.StdEncoding.EncodeToString(nonce),
		Version:    envelopeVersion,
		Handle:     v.ID,
	}
	b, _ := json.Marshal(env)
	return base64.StdEncoding.EncodeToString(b)
}

// parseEnvelope decodes a wrapped DEK as a client sends it. It does not open
// it: the handle first picks the key version.
func parseEnvelope(s string) (*envelope, []byte, []byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, nil, nil, errEnvelope
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil || env.Version != envelopeVersion || env.Handle == "" {
		return nil, nil, nil, errEnvelope
	}
	ct, err1 := base64.StdEncoding.DecodeString(env.Ciphertext)
	iv, err2 := base64.StdEncoding.DecodeString(env.IV)
	if err1 != nil || err2 != nil || len(iv) != 12 || len(ct) < 16 {
		return nil, nil, nil, errEnvelope
	}
	return &env, ct, iv, nil
}

func open(keyID string, v *version, ct, iv []byte, aad []string) ([]byte, error) {
	return newGCM(v.Material).Open(nil, iv, ct, gcmAAD(keyID, v.ID, aad))
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
