// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

func TestStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kpemu.json")
	cfg := Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}, StatePath: path}
	first, err := Listen(cfg, "127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: first.Server, url: first.URL}
	c := e.client()
	root, err := c.CreateKeyWithAliases(ctx(t), "root", nil, false, []string{"persisted"})
	if err != nil {
		t.Fatal(err)
	}
	aad := []string{"a"}
	ct, err := c.Wrap(ctx(t), root.ID, nil, &aad)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.AddRegistration(root.ID, testCRN1, true); err != nil {
		t.Fatal(err)
	}
	if err := c.DisableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(first.URL, "http://")
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), testAPIKey) {
		t.Fatal("the state file holds an API key")
	}

	second, err := Listen(cfg, addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close(context.Background()) })
	// The same client, holding a token from before the restart.
	md, err := c.GetKeyMetadata(ctx(t), "persisted")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if md.ID != root.ID || md.State != int(kp.Suspended) {
		t.Fatalf("key after restart: %+v", md)
	}
	regs, err := c.ListRegistrations(ctx(t), root.ID, "")
	if err != nil || len(regs.Registrations) != 1 || regs.Registrations[0].ResourceCrn != testCRN1 || !regs.Registrations[0].PreventKeyDeletion {
		t.Fatalf("registrations after restart: %+v %v", regs, err)
	}
	second.AdvanceClock(time.Minute)
	if err := c.EnableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Unwrap(ctx(t), root.ID, ct, &aad); err != nil {
		t.Fatalf("unwrap of a ciphertext made before the restart: %v", err)
	}
}

func TestCorruptOrForeignStateFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"truncated":  `{"schema":1,"instanceId":"` + testInstance,
		"not json":   "hello",
		"bad schema": `{"schema":9,"instanceId":"` + testInstance + `"}`,
		"foreign":    `{"schema":1,"instanceId":"0b6e1f3a-1111-4222-8333-444455556666","signingKey":"` + strings.Repeat("A", 43) + `="}`,
		"no key id":  `{"schema":1,"instanceId":"` + testInstance + `","signingKey":"` + strings.Repeat("A", 43) + `=","keys":[{"name":"x"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}, StatePath: path})
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("want an error naming %s, got %v", path, err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Fatal("a bad state file was overwritten")
			}
		})
	}
}

func TestConfigIsValidated(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no instance":   {APIKeys: []string{"k"}},
		"bad instance":  {InstanceID: "abc", APIKeys: []string{"k"}},
		"no api key":    {InstanceID: testInstance},
		"empty api key": {InstanceID: testInstance, APIKeys: []string{""}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSchemaOneStateFileIsRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kpemu.json")
	const id = "6a0b1b1e-0000-4000-8000-000000000001"
	material := strings.Repeat("A", 43) + "="
	v1 := `{"schema":1,"instanceId":"` + testInstance + `","signingKey":"` + material + `","keys":[` +
		`{"id":"` + id + `","name":"old","extractable":false,"imported":false,"keyRing":"default",` +
		`"versions":[{"id":"` + id + `","created":"2026-01-01T00:00:00Z","material":"` + material + `"}],` +
		`"state":1,"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z","changed":"2026-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	e := &env{t: t, srv: s, url: hs.URL}
	c := e.client()
	md, err := c.GetKeyMetadata(ctx(t), id)
	if err != nil || md.Name != "old" || md.LastUpdateDate != nil {
		t.Fatalf("a schema 1 key never updated has no lastUpdateDate: %+v %v", md, err)
	}
	if err := c.DisableKey(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"schema": 2`) {
		t.Fatalf("rewritten as schema 2: %v %.80s", err, b)
	}
}
