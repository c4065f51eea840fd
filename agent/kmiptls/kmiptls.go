// SPDX-License-Identifier: Apache-2.0

// Package kmiptls builds the TLS configuration of byokd's KMIP server from
// the files [kmip] names. It imports only the standard library, so that
// byokctl check-config loads the files exactly as byokd does.
package kmiptls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
)

// NotAllowed ends the handshake error of a client whose certificate is not
// on the allow-list.
const NotAllowed = "is not on kmip.allowed_clients"

// Files are the PEM files and allow-list of [kmip].
type Files struct {
	CAFile, CertFile, KeyFile string
	// Allowed are the client certificates' Subject Common Names that
	// may connect.
	Allowed []string
}

// Load builds the server's TLS configuration: TLS 1.2 or newer, a
// client certificate signed by the CA in CAFile required, and its Common
// Name on the allow-list.
func Load(f Files) (*tls.Config, error) {
	if len(f.Allowed) == 0 {
		return nil, errors.New("kmip: no allowed clients")
	}
	if err := checkKeyFile(f.KeyFile); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("kmip: server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("kmip: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kmip: %s holds no PEM certificate", f.CAFile)
	}
	allowed := slices.Clone(f.Allowed)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			cn := cs.PeerCertificates[0].Subject.CommonName
			if !slices.Contains(allowed, cn) {
				return fmt.Errorf("client certificate %q %s", cn, NotAllowed)
			}
			return nil
		},
	}, nil
}

// checkKeyFile refuses a private key file others can read.
func checkKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("kmip: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return fmt.Errorf("kmip: %s has mode %#o: others may read the server's private key; want 0600 or 0640", path, fi.Mode().Perm())
	}
	return nil
}
