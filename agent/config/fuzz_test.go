// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary documents to the parser: it never panics, and
// every error it returns names the file.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../testdata/byokd.example.toml", "../../testdata/config/valid_minimal.toml", "../../testdata/config/wrong_types.toml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("cluster_id = 1\n[keyprotect]\ntimeout = \"1x\"\n"))
	f.Add([]byte("[[lock_action]]\ncommand = []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		t.Setenv("CREDENTIALS_DIRECTORY", "")
		cfg, err := Parse("fuzz.toml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			return
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.File != "fuzz.toml" {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
