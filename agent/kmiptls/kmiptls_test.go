// SPDX-License-Identifier: Apache-2.0

package kmiptls

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/byokd/byokd/internal/testenv"
)

func TestLoad(t *testing.T) {
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "127.0.0.1")
	good := Files{CAFile: pki.CAFile, CertFile: cert, KeyFile: key, Allowed: []string{"mongod"}}
	cfg, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil || cfg.VerifyConnection == nil {
		t.Fatalf("config: min %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}

	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	for name, tc := range map[string]struct {
		edit func(f *Files)
		want string
	}{
		"no allowed clients": {func(f *Files) { f.Allowed = nil }, "no allowed clients"},
		"key others read":    {func(f *Files) { os.Chmod(f.KeyFile, 0o644) }, "others may read the server's private key"},
		"missing CA":         {func(f *Files) { f.CAFile += ".missing" }, "no such file"},
		"CA without PEM":     {func(f *Files) { f.CAFile = notPEM }, "holds no PEM certificate"},
		"missing cert":       {func(f *Files) { f.CertFile += ".missing" }, "server certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			os.Chmod(key, 0o600)
			f := good
			tc.edit(&f)
			if _, err := Load(f); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want %q", err, tc.want)
			}
		})
	}
}
