// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Schema is the file format version this package writes and reads.
const Schema = 1

// Record is the content of the wrapped key file. Ciphertext is Key Protect's
// wrapped DEK: not secret, but logs and errors name it by Fingerprint only.
type Record struct {
	Schema     int    `json:"schema"`
	RootKeyID  string `json:"root_key_id"`
	InstanceID string `json:"instance_id"`
	ClusterID  string `json:"cluster_id"`
	Ciphertext string `json:"ciphertext"`
	// KeyVersion is the root key version Key Protect wrapped under. It may
	// be empty: Key Protect does not always report it, and unwrap does not
	// need it.
	KeyVersion string `json:"key_version"`
	// AAD is the additional authenticated data the ciphertext is bound to,
	// ["byokd", "cluster:<cluster_id>"] as byokd writes it.
	AAD     []string  `json:"aad"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// fields maps each JSON key of the file to the Record field it fills. Load
// decodes key by key through it, so that keys match exactly: encoding/json
// alone would take "CipherText" for "ciphertext" and the last of two
// duplicate keys, and byokd does not guess which one was meant.
func (r *Record) fields() map[string]any {
	return map[string]any{
		"schema":      &r.Schema,
		"root_key_id": &r.RootKeyID,
		"instance_id": &r.InstanceID,
		"cluster_id":  &r.ClusterID,
		"ciphertext":  &r.Ciphertext,
		"key_version": &r.KeyVersion,
		"aad":         &r.AAD,
		"created":     &r.Created,
		"updated":     &r.Updated,
	}
}

// Validate reports the first field that makes r unusable.
func (r *Record) Validate() error {
	if r.Schema != Schema {
		return fmt.Errorf("unknown schema %d (this byokd reads schema %d)", r.Schema, Schema)
	}
	for _, f := range []struct{ name, value string }{
		{"root_key_id", r.RootKeyID},
		{"instance_id", r.InstanceID},
		{"cluster_id", r.ClusterID},
		{"ciphertext", r.Ciphertext},
	} {
		if f.value == "" {
			return fmt.Errorf("%s is empty", f.name)
		}
	}
	if len(r.AAD) == 0 {
		return errors.New("aad is empty")
	}
	for i, a := range r.AAD {
		if a == "" {
			return fmt.Errorf("aad[%d] is empty", i)
		}
	}
	if r.Created.IsZero() {
		return errors.New("created is not set")
	}
	if r.Updated.IsZero() {
		return errors.New("updated is not set")
	}
	return nil
}

// Fingerprint names the ciphertext in logs: the first 12 hex digits of its
// SHA-256.
func (r *Record) Fingerprint() string {
	sum := sha256.Sum256([]byte(r.Ciphertext))
	return hex.EncodeToString(sum[:6])
}

// Identity is what a wrapped key belongs to: a root key in a Key Protect
// instance, for one database cluster.
type Identity struct {
	RootKeyID  string
	InstanceID string
	ClusterID  string
}

// String names every part of the identity, for error messages.
func (id Identity) String() string {
	return fmt.Sprintf("root key %q, instance %q, cluster %q", id.RootKeyID, id.InstanceID, id.ClusterID)
}

// Identity returns what r belongs to.
func (r *Record) Identity() Identity {
	return Identity{RootKeyID: r.RootKeyID, InstanceID: r.InstanceID, ClusterID: r.ClusterID}
}

// encode validates r and renders the file content: indented JSON and a
// final newline.
func encode(r *Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid record: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return append(b, '\n'), nil
}

// parse decodes a file's content strictly: one JSON object, schema 1, every
// key present exactly once with its exact name, nothing else, and every
// value valid. Its errors describe the content; callers add ErrCorrupt and
// the path.
func parse(b []byte) (*Record, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file")
	}
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	raw := make(map[string]json.RawMessage)
	var r Record
	dst := r.fields()
	unknown := "" // the first key schema 1 does not have
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, truncated(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %v in the object", tok)
		}
		if _, ok := dst[key]; !ok && unknown == "" {
			unknown = key
		}
		if _, dup := raw[key]; dup {
			return nil, fmt.Errorf("key %s appears twice", quoteClip(key))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("value of %s: %w", quoteClip(key), truncated(err))
		}
		raw[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, truncated(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	// The schema decides how to read the rest, so it is checked first: a
	// newer file says "unknown schema", not "unknown key".
	s, ok := raw["schema"]
	if !ok {
		return nil, errors.New("no schema")
	}
	if err := json.Unmarshal(s, &r.Schema); err != nil {
		return nil, notA("schema")
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("unknown schema %d (this byokd reads schema %d)", r.Schema, Schema)
	}
	if unknown != "" {
		return nil, fmt.Errorf("unknown key %s", quoteClip(unknown))
	}
	for _, key := range fieldNames {
		v, ok := raw[key]
		if !ok {
			return nil, fmt.Errorf("no %s", key)
		}
		if err := json.Unmarshal(v, dst[key]); err != nil {
			return nil, notA(key)
		}
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// fieldNames lists the keys of the file in the order byokd writes them.
var fieldNames = []string{
	"schema", "root_key_id", "instance_id", "cluster_id", "ciphertext",
	"key_version", "aad", "created", "updated",
}

// notA says which type key's value should have had. It leaves out the
// value and encoding/json's error, which quote it: the value may be the
// ciphertext, which errors and logs never carry in full.
func notA(key string) error {
	want := "a string"
	switch key {
	case "schema":
		want = "an integer"
	case "aad":
		want = "a list of strings"
	case "created", "updated":
		want = "an RFC 3339 time"
	}
	return fmt.Errorf("%s: not %s", key, want)
}

// quoteClip quotes content for an error, cut to a few dozen characters,
// for the same reason.
func quoteClip(s string) string {
	q := strconv.Quote(s)
	if len(q) <= 40 {
		return q
	}
	return q[:40] + "..."
}

// truncated names the usual cause of an early end of input.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("truncated: the JSON object does not end")
	}
	return err
}
