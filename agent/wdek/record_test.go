// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// goldenCiphertext is the ciphertext in testdata/dek.json; errors must
// never carry it.
const goldenCiphertext = "eyJjaXBoZXJ0ZXh0IjoiV3JhcHBlZERFSy1ub3QtYS1zZWNyZXQiLCJpdiI6IkFBQUEiLCJ2ZXJzaW9uIjoiNC4wLjAifQ=="

// goldenRecord is the record in testdata/dek.json.
func goldenRecord() *Record {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	return &Record{
		Schema:     Schema,
		RootKeyID:  "3c5b2a8e-7d41-4f0a-9b2c-6e1f0d9a4b71",
		InstanceID: "a1d2c3b4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
		ClusterID:  "orders-prod",
		Ciphertext: goldenCiphertext,
		KeyVersion: "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
		AAD:        []string{"byokd", "cluster:orders-prod"},
		Created:    at,
		Updated:    at,
	}
}

func golden(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/dek.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameRecord(a, b *Record) bool {
	return a.Schema == b.Schema && a.Identity() == b.Identity() && a.Ciphertext == b.Ciphertext &&
		a.KeyVersion == b.KeyVersion && slices.Equal(a.AAD, b.AAD) &&
		a.Created.Equal(b.Created) && a.Updated.Equal(b.Updated)
}

func TestEncodeWritesThePrettyPrintedSchema1Format(t *testing.T) {
	got, err := encode(goldenRecord())
	if err != nil {
		t.Fatal(err)
	}
	if want := golden(t); !bytes.Equal(got, want) {
		t.Fatalf("encoded record differs from testdata/dek.json:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseReadsTheGoldenFile(t *testing.T) {
	got, err := parse(golden(t))
	if err != nil {
		t.Fatal(err)
	}
	if !sameRecord(got, goldenRecord()) {
		t.Fatalf("parsed %+v, want %+v", got, goldenRecord())
	}
}

// The parser decodes by fieldNames and fields(), the encoder by struct
// tags; they must name the same keys.
func TestNewerSchemaIsReportedAsUnknownSchemaNotUnknownKey(t *testing.T) {
	g := strings.Replace(string(golden(t)), `"schema": 1,`, `"schema": 2, "kms": "hpcs",`, 1)
	_, err := parse([]byte(g))
	if err == nil || !strings.Contains(err.Error(), "unknown schema 2") {
		t.Fatalf("parse() = %v, want unknown schema 2", err)
	}
}

func TestParserAndEncoderAgreeOnTheKeys(t *testing.T) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(golden(t), &m); err != nil {
		t.Fatal(err)
	}
	tags := slices.Sorted(maps.Keys(m))
	if names := slices.Sorted(slices.Values(fieldNames)); !slices.Equal(names, tags) {
		t.Fatalf("fieldNames %v, encoded keys %v", names, tags)
	}
	if f := slices.Sorted(maps.Keys((&Record{}).fields())); !slices.Equal(f, tags) {
		t.Fatalf("fields() %v, encoded keys %v", f, tags)
	}
}

func TestValidateNamesTheMissingField(t *testing.T) {
	for field, mutate := range map[string]func(*Record){
		"schema":      func(r *Record) { r.Schema = 2 },
		"root_key_id": func(r *Record) { r.RootKeyID = "" },
		"instance_id": func(r *Record) { r.InstanceID = "" },
		"cluster_id":  func(r *Record) { r.ClusterID = "" },
		"ciphertext":  func(r *Record) { r.Ciphertext = "" },
		"aad":         func(r *Record) { r.AAD = nil },
		"aad[1]":      func(r *Record) { r.AAD[1] = "" },
		"created":     func(r *Record) { r.Created = time.Time{} },
		"updated":     func(r *Record) { r.Updated = time.Time{} },
	} {
		t.Run(field, func(t *testing.T) {
			r := goldenRecord()
			mutate(r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, field)
			}
			if _, err := encode(r); err == nil {
				t.Fatal("encode accepted an invalid record")
			}
		})
	}
	r := goldenRecord()
	r.KeyVersion = ""
	if err := r.Validate(); err != nil {
		t.Fatalf("a record without key version (Key Protect may omit it): %v", err)
	}
}

func TestFingerprintIsTheFirst12HexOfTheCiphertextSHA256(t *testing.T) {
	r := goldenRecord()
	sum := sha256.Sum256([]byte(goldenCiphertext))
	if got, want := r.Fingerprint(), hex.EncodeToString(sum[:])[:12]; got != want {
		t.Fatalf("Fingerprint() = %q, want %q", got, want)
	}
	other := goldenRecord()
	other.Ciphertext += "x"
	if other.Fingerprint() == r.Fingerprint() {
		t.Fatal("two ciphertexts have the same fingerprint")
	}
}

// FuzzLoad writes arbitrary bytes as the wrapped key file: Load never
// panics, fails only with ErrCorrupt and a short error that cannot carry a
// whole ciphertext, and whatever it accepts is valid and survives a write and a
// reload unchanged.
func FuzzLoad(f *testing.F) {
	f.Add(golden(f))
	f.Add([]byte(""))
	f.Add([]byte("{}"))
	f.Add([]byte(`{"schema":1}`))
	s, err := Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(s.Path(), content, 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Load()
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load of a 0600 regular file: %v, want ErrCorrupt", err)
			}
			// The error may quote a little of the content, never a
			// whole ciphertext.
			if detail := strings.TrimPrefix(err.Error(), "load "+s.Path()+": "); len(detail) > 160 {
				t.Fatalf("the error quotes too much of the file (%d bytes): %v", len(detail), err)
			}
			return
		}
		if err := rec.Validate(); err != nil {
			t.Fatalf("Load accepted an invalid record: %v", err)
		}
		out, err := encode(rec)
		if err != nil {
			t.Fatalf("a loaded record does not encode: %v", err)
		}
		again, err := parse(out)
		if err != nil {
			t.Fatalf("an encoded record does not parse: %v\n%s", err, out)
		}
		if !sameRecord(rec, again) {
			t.Fatalf("round trip changed the record: %+v, then %+v", rec, again)
		}
	})
}
