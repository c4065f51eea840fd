// SPDX-License-Identifier: Apache-2.0

package wdek

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func identity(gen uint32, fp byte) *KeyIdentity {
	return &KeyIdentity{
		Schema: Schema, Fingerprint: strings.Repeat(string("0123456789abcdef"[fp%16]), 64), Generation: gen,
		RootKeyID: "root", InstanceID: "inst", ClusterID: "c1", Recorded: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
	}
}

func TestIdentityIsRecordedOnceThenReplacedKeepingThePrevious(t *testing.T) {
	s := newStore(t)
	if _, err := s.LoadIdentity(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("no identity yet: %v, want ErrNotExist", err)
	}
	first := identity(1, 1)
	if err := s.RecordIdentity(first); err != nil {
		t.Fatal(err)
	}
	wantMode0600(t, s.IdentityPath())
	if err := s.RecordIdentity(identity(1, 2)); !errors.Is(err, ErrExists) {
		t.Fatalf("a second record: %v, want ErrExists", err)
	}
	got, err := s.LoadIdentity()
	if err != nil || *got != *first {
		t.Fatalf("load: %+v %v", got, err)
	}
	second := identity(2, 3)
	if err := s.ReplaceIdentity(second); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadIdentity(); err != nil || *got != *second {
		t.Fatalf("after replace: %+v %v", got, err)
	}
	prev, err := parseIdentity(readFile(t, s.IdentityPath()+PrevSuffix))
	if err != nil || *prev != *first {
		t.Fatalf("the previous identity was not kept: %+v %v", prev, err)
	}
	if err := s.RetireIdentity(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadIdentity(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("after retire: %v, want ErrNotExist", err)
	}
	if prev, err := parseIdentity(readFile(t, s.IdentityPath()+PrevSuffix)); err != nil || *prev != *second {
		t.Fatalf("retire did not keep the identity as .prev: %+v %v", prev, err)
	}
	if err := s.RetireIdentity(); !errors.Is(err, ErrNotExist) {
		t.Fatalf("retire without an identity: %v", err)
	}
}

func TestCorruptOrUnsafeIdentityIsRefused(t *testing.T) {
	s := newStore(t)
	for _, content := range []string{"", "{", `{"schema":1}`, `{"schema":2}`, `{"schema":1,"extra":1}`,
		`{"schema":1,"fingerprint":"XYZ","generation":1,"root_key_id":"r","instance_id":"i","cluster_id":"c","recorded":"2026-12-01T00:00:00Z"}`,
		`{"schema":1,"fingerprint":"` + strings.Repeat("a", 64) + `","generation":0,"root_key_id":"r","instance_id":"i","cluster_id":"c","recorded":"2026-12-01T00:00:00Z"}`,
	} {
		if err := os.WriteFile(s.IdentityPath(), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadIdentity(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.IdentityPath()) {
			t.Errorf("load %q: %v, want ErrCorrupt naming the file", content, err)
		}
		if err := s.RecordIdentity(identity(1, 1)); !errors.Is(err, ErrExists) {
			t.Errorf("record over %q: %v, want ErrExists", content, err)
		}
	}
	os.Remove(s.IdentityPath())
	if err := os.Symlink(filepath.Join(t.TempDir(), "elsewhere"), s.IdentityPath()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadIdentity(); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("symlinked identity: %v, want ErrUnsafe", err)
	}
	if err := s.RecordIdentity(identity(1, 1)); !errors.Is(err, ErrExists) {
		t.Fatalf("record over a symlink: %v, want ErrExists", err)
	}
	if err := s.RecordIdentity(&KeyIdentity{Schema: 1}); err == nil {
		t.Fatal("an invalid identity was written")
	}
}
