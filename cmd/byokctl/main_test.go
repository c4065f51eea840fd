// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitHandsOverTheCredentialCheckConfigChecks: check-config checks the
// credential byokd.service loads, from the file it loads it from.
func TestUnitHandsOverTheCredentialCheckConfigChecks(t *testing.T) {
	b, err := os.ReadFile("../../systemd/byokd.service")
	if err != nil {
		t.Fatal(err)
	}
	want := "LoadCredential=" + credentialName + ":" + unitCredentialSource
	if !strings.Contains(string(b), "\n"+want+"\n") {
		t.Fatalf("systemd/byokd.service does not say %s", want)
	}
	for file, lines := range map[string][]string{
		"byokd@.service": {"LoadCredential=" + credentialName + ":/etc/byokd/%i.apikey", "StateDirectory=byokd-%i", "ExecStart=/usr/bin/byokd --config /etc/byokd/%i.toml"},
		"byokd@.socket":  {"ListenStream=/run/byokd-%i/keyprovider.sock"},
	} {
		b, err := os.ReadFile("../../systemd/" + file)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if !strings.Contains(string(b), "\n"+l+"\n") {
				t.Errorf("systemd/%s does not say %s", file, l)
			}
		}
	}
	if src, dir := credentialOf("eu1"); src != "/etc/byokd/eu1.apikey" || dir != "/run/credentials/byokd@eu1.service" || clusterStateDir("eu1") != "/var/lib/private/byokd-eu1" {
		t.Errorf("cluster eu1: credential %s in %s, state %s", src, dir, clusterStateDir("eu1"))
	}
	if unitCredentialsDir != "/run/credentials/byokd.service" {
		t.Fatalf("systemd puts byokd.service's credentials in /run/credentials/byokd.service, not %s", unitCredentialsDir)
	}
}

// TestCheckConfigRefusesKMIPForAnInstance: byokd@NAME's dynamic user
// cannot read a server key owned by byokd, so check-config refuses [kmip]
// for an instance, and says so, before byokd would fail at start.
func TestCheckConfigRefusesKMIPForAnInstance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eu1.toml")
	doc := `cluster_id = "eu1"
[keyprotect]
url = "https://kp.example"
instance_id = "3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10"
root_key_id = "byokd-root"
api_key_file = "/etc/byokd/kp-apikey"
[state]
dir = "/var/lib/private/byokd-eu1"
[socket]
path = "/run/byokd-eu1/keyprovider.sock"
allowed_uids = [999]
[kmip]
enabled = true
allowed_clients = ["mongod"]
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run([]string{"--cluster", "eu1", "check-config", path}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "byokd@eu1 cannot serve KMIP") {
		t.Fatalf("check-config of an instance with [kmip]: %v\n%s", err, out.String())
	}
	// The same without [kmip] passes the instance's checks.
	if err := os.WriteFile(path, []byte(strings.Split(doc, "[kmip]")[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"--cluster", "eu1", "check-config", path}, &out, &out); err != nil && strings.Contains(err.Error(), "KMIP") {
		t.Fatalf("check-config of an instance without [kmip]: %v", err)
	}
}
