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
	if unitCredentialsDir != "/run/credentials/byokd.service" {
		t.Fatalf("systemd puts byokd.service's credentials in /run/credentials/byokd.service, not %s", unitCredentialsDir)
	}
}
