// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Key states as the service numbers them.
const (
	statePreActive   = 0
	stateActive      = 1
	stateSuspended   = 2
	stateDeactivated = 3
	stateDestroyed   = 5
)

// version is one generation of a key's material. Root key material never
// leaves the emulator; standard key material is the payload a client reads.
type version struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Material []byte    `json:"material"`
}

type key struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Extractable bool      `json:"extractable"`
	Imported    bool      `json:"imported"`
	Tags        []string  `json:"tags,omitempty"`
	Aliases     []alias   `json:"aliases,omitempty"`
	KeyRing     string    `json:"keyRing"`
	Versions    []version `json:"versions"` // oldest first
	State       int       `json:"state"`    // stored state; expiry is applied on read
	Created     time.Time `json:"created"`
	// Updated is the last change of the key (lastUpdateDate); nil until the
	// key is first changed, as the service sets none at create.
	Updated    *time.Time `json:"updated,omitempty"`
	Rotated    *time.Time `json:"rotated,omitempty"`
	Changed    time.Time  `json:"changed"` // last state change, for REQ_TOO_EARLY_ERR
	Expiration *time.Time `json:"expiration,omitempty"`
	Deleted    *time.Time `json:"deleted,omitempty"`
	// Notified is the last notification of the key's registered services
	// (a rotate, restore, disable, enable or delete, or a sync): sync is
	// refused within an hour of it.
	Notified *time.Time `json:"notified,omitempty"`
	// Registrations are the cloud resources IBM services encrypt with the
	// key; a purge removes them with the key.
	Registrations []registration `json:"registrations,omitempty"`
	// The key's policies, and the pending first authorization of a delete
	// under a dual authorization policy.
	RotationPolicy *keyPolicy    `json:"rotationPolicy,omitempty"`
	DualAuthPolicy *keyPolicy    `json:"dualAuthPolicy,omitempty"`
	DeletionAuth   *deletionAuth `json:"deletionAuth,omitempty"`
}

// touch records a change of the key (its lastUpdateDate).
func (k *key) touch(now time.Time) { k.Updated = &now }

// notify records a lifecycle event sent to the key's registered services.
func (k *key) notify(now time.Time) { k.Notified = &now }

type alias struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

func (k *key) root() bool { return !k.Extractable }

func (k *key) latest() *version { return &k.Versions[len(k.Versions)-1] }

func (k *key) version(id string) *version {
	for i := range k.Versions {
		if k.Versions[i].ID == id {
			return &k.Versions[i]
		}
	}
	return nil
}

// effectiveState applies the expiration date: an expired key is deactivated
// whatever it was, unless it is already destroyed.
func (k *key) effectiveState(now time.Time) int {
	if k.State == stateDestroyed {
		return stateDestroyed
	}
	if k.Expiration != nil && !now.Before(*k.Expiration) {
		return stateDeactivated
	}
	return k.State
}

func (k *key) hasAlias(name string) bool {
	return slices.ContainsFunc(k.Aliases, func(a alias) bool { return a.Name == name })
}

// stateFile is the on-disk form of the emulator's keys (--state).
type stateFile struct {
	Schema     int    `json:"schema"`
	InstanceID string `json:"instanceId"`
	SigningKey []byte `json:"signingKey"` // signs IAM tokens, so tokens survive a restart
	Keys       []*key `json:"keys"`
	// InstancePolicies are the instance's policies (schema 2).
	InstancePolicies []*instancePolicy `json:"instancePolicies,omitempty"`
}

// stateSchema is the state file's format. Schema 1 files (before
// registrations, policies and an optional lastUpdateDate) are read and
// rewritten as schema 2.
const stateSchema = 2

func loadState(path, instance string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (refusing to start rather than lose keys): %w", path, err)
	}
	if st.Schema != stateSchema && st.Schema != 1 {
		return nil, fmt.Errorf("state file %s: unknown schema %d (want 1 or %d)", path, st.Schema, stateSchema)
	}
	if st.InstanceID != instance {
		return nil, fmt.Errorf("state file %s belongs to instance %s, not %s", path, st.InstanceID, instance)
	}
	if len(st.SigningKey) != 32 {
		return nil, fmt.Errorf("state file %s is corrupt: signing key has %d bytes", path, len(st.SigningKey))
	}
	for i, k := range st.Keys {
		if k == nil || k.ID == "" || len(k.Versions) == 0 {
			return nil, fmt.Errorf("state file %s is corrupt: key %d has no id or no versions", path, i)
		}
		if st.Schema == 1 && k.Updated != nil && k.Updated.Equal(k.Created) {
			// Schema 1 set the update date at create: such a key was
			// never updated.
			k.Updated = nil
		}
	}
	st.Schema = stateSchema
	return &st, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("kpemu: crypto/rand failed: " + err.Error())
	}
	return b
}

func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
