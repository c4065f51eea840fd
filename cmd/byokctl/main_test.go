// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os"
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
