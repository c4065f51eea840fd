// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// IdentityFileName is the file, beside the wrapped key, that records which
// data encryption key the node serves.
const IdentityFileName = "identity.json"

// KeyIdentity records the data encryption key a node serves, by a keyed
// fingerprint of the clear key, so that the node never starts serving
// another one: a wrapped key file copied from another node or restored
// from the wrong backup unwraps to a different key, and its fingerprint
// shows it. It is written when the node first provisions or unlocks a key
// and survives restarts; only an operator replaces it.
type KeyIdentity struct {
	Schema int `json:"schema"`
	// Fingerprint is HMAC-SHA256 under the DEK of a fixed label, in 64
	// lower-case hex digits: it names the key without revealing it.
	Fingerprint string `json:"fingerprint"`
	// Generation counts the keys this node has served: 1 for the first,
	// one more each time an operator accepts another key or gives one up.
	Generation uint32    `json:"generation"`
	RootKeyID  string    `json:"root_key_id"`
	InstanceID string    `json:"instance_id"`
	ClusterID  string    `json:"cluster_id"`
	Recorded   time.Time `json:"recorded"`
}

// Short is the fingerprint as operators read and type it: its first 16
// hex digits.
func (k *KeyIdentity) Short() string { return ShortFingerprint(k.Fingerprint) }

// ShortFingerprint cuts a fingerprint to the 16 hex digits operators use.
func ShortFingerprint(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

// Validate reports the first field that makes k unusable.
func (k *KeyIdentity) Validate() error {
	if k.Schema != Schema {
		return fmt.Errorf("unknown schema %d (this byokd reads schema %d)", k.Schema, Schema)
	}
	if b, err := hex.DecodeString(k.Fingerprint); err != nil || len(b) != 32 || hex.EncodeToString(b) != k.Fingerprint {
		return errors.New("fingerprint is not 64 lower-case hex digits")
	}
	if k.Generation == 0 {
		return errors.New("generation is 0")
	}
	for _, f := range []struct{ name, value string }{
		{"root_key_id", k.RootKeyID}, {"instance_id", k.InstanceID}, {"cluster_id", k.ClusterID},
	} {
		if f.value == "" {
			return fmt.Errorf("%s is empty", f.name)
		}
	}
	if k.Recorded.IsZero() {
		return errors.New("recorded is not set")
	}
	return nil
}

func parseIdentity(b []byte) (*KeyIdentity, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var k KeyIdentity
	if err := dec.Decode(&k); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, errors.New("not a key identity record")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return &k, nil
}

// IdentityPath is the key identity file.
func (s *Store) IdentityPath() string { return filepath.Join(s.dir, IdentityFileName) }

// LoadIdentity reads the key identity. It fails with ErrNotExist when none
// was recorded, and as Load does for an unsafe or corrupt file.
func (s *Store) LoadIdentity() (*KeyIdentity, error) {
	return s.loadIdentity(IdentityFileName)
}

// LoadPreviousIdentity reads identity.json.prev: the identity an operator
// replaced or retired last.
func (s *Store) LoadPreviousIdentity() (*KeyIdentity, error) {
	return s.loadIdentity(IdentityFileName + PrevSuffix)
}

func (s *Store) loadIdentity(name string) (*KeyIdentity, error) {
	path := filepath.Join(s.dir, name)
	b, err := s.readFile(name)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	k, err := parseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w: %v", path, ErrCorrupt, err)
	}
	return k, nil
}

// RecordIdentity writes k only if no identity is recorded yet (ErrExists
// otherwise), atomically and durably as Create writes the wrapped key.
func (s *Store) RecordIdentity(k *KeyIdentity) error {
	return s.writeIdentity(k, false)
}

// ReplaceIdentity writes k over the recorded identity, keeping the old one
// as identity.json.prev: an operator accepted another key.
func (s *Store) ReplaceIdentity(k *KeyIdentity) error {
	return s.writeIdentity(k, true)
}

func (s *Store) writeIdentity(k *KeyIdentity, replace bool) error {
	path := s.IdentityPath()
	if err := k.Validate(); err != nil {
		return fmt.Errorf("record %s: invalid identity: %w", path, err)
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	b = append(b, '\n')
	release, err := s.acquire()
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	defer release()
	if replace {
		old, err := s.readFile(IdentityFileName)
		if err != nil {
			return fmt.Errorf("replace %s: %w", path, err)
		}
		if err := s.writeAtomic(IdentityFileName+PrevSuffix, old, true); err != nil {
			return fmt.Errorf("replace %s: keep the previous identity: %w", path, err)
		}
	}
	if err := s.writeAtomic(IdentityFileName, b, replace); err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	return nil
}

// RetireIdentity moves the recorded identity to identity.json.prev, so that
// the node may provision a new key: an operator gave up the old one.
func (s *Store) RetireIdentity() error {
	path := s.IdentityPath()
	release, err := s.acquire()
	if err != nil {
		return fmt.Errorf("retire %s: %w", path, err)
	}
	defer release()
	if _, err := s.readFile(IdentityFileName); err != nil {
		return fmt.Errorf("retire %s: %w", path, err)
	}
	if err := s.fs.Rename(s.dirfd(), IdentityFileName, IdentityFileName+PrevSuffix); err != nil {
		return fmt.Errorf("retire %s: %w", path, err)
	}
	if err := s.fs.SyncDir(s.d); err != nil {
		return fmt.Errorf("fsync state folder %s: %w", s.dir, err)
	}
	return nil
}
