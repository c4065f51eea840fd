// SPDX-License-Identifier: Apache-2.0

package kmippki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/kmippki"
)

// handshake is what each end of a TLS handshake saw.
type handshake struct {
	serverErr, clientErr error
	version              uint16
	peerCN               string // the client certificate's CN, as the server saw it
}

// tlsServer listens on a loopback TCP port as byokd's KMIP server would,
// with the files of f, and returns a func that connects with client
// config cc and completes one handshake.
func tlsServer(t *testing.T, f kmippki.Files) func(cc *tls.Config) handshake {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	sc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    caPool(t, f.CA),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return func(cc *tls.Config) handshake {
		t.Helper()
		type result struct {
			err     error
			version uint16
			cn      string
		}
		done := make(chan result, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- result{err: err}
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(c, sc)
			var r result
			if r.err = tc.Handshake(); r.err == nil {
				st := tc.ConnectionState()
				r.version = st.Version
				r.cn = st.PeerCertificates[0].Subject.CommonName
				// Something through the connection, both ways.
				buf := make([]byte, 4)
				if _, err := tc.Read(buf); err != nil || string(buf) != "ping" {
					r.err = errors.Join(errors.New("no ping from the client"), err)
				} else if _, err := tc.Write([]byte("pong")); err != nil {
					r.err = err
				}
			}
			done <- r
		}()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, cc)
		h := handshake{clientErr: tc.Handshake()}
		if h.clientErr == nil {
			buf := make([]byte, 4)
			if _, err := tc.Write([]byte("ping")); err != nil {
				h.clientErr = err
			} else if _, err := tc.Read(buf); err != nil || string(buf) != "pong" {
				h.clientErr = errors.Join(errors.New("no pong from the server"), err)
			}
		}
		tc.Close()
		r := <-done
		h.serverErr, h.version, h.peerCN = r.err, r.version, r.cn
		return h
	}
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", file)
	}
	return p
}

func keyPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSHandshakeWithTheFiles: a server with server.pem and server.key
// that requires client certificates signed by ca.pem accepts the client
// certificates Init made (from the bundle as from the certificate and key
// files) over TLS 1.2, at each of its names; it refuses a client
// certificate from another Init, and none at all; a client that trusts
// another CA, or connects to a name the server certificate lacks, refuses
// the server.
func TestTLSHandshakeWithTheFiles(t *testing.T) {
	f, err := kmippki.Init(kmippki.Options{Dir: t.TempDir(), Hosts: []string{"127.0.0.1", "localhost"}, Clients: []string{"mongod"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := kmippki.Init(kmippki.Options{Dir: t.TempDir(), Hosts: []string{"127.0.0.1", "localhost"}, Clients: []string{"mongod"}})
	if err != nil {
		t.Fatal(err)
	}
	connect := tlsServer(t, f)
	roots := caPool(t, f.CA)
	bundle := keyPair(t, f.Clients[0].Bundle, f.Clients[0].Bundle)
	tls12 := func(serverName string, certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: serverName, Certificates: certs, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}
	}

	for _, tc := range []struct {
		name string
		cc   *tls.Config
	}{
		{"bundle, localhost", tls12("localhost", bundle)},
		{"bundle, 127.0.0.1", tls12("127.0.0.1", bundle)},
		{"certificate and key files", tls12("localhost", keyPair(t, f.Clients[0].Cert, f.Clients[0].Key))},
	} {
		h := connect(tc.cc)
		if h.serverErr != nil || h.clientErr != nil {
			t.Errorf("%s: handshake failed: server: %v; client: %v", tc.name, h.serverErr, h.clientErr)
			continue
		}
		if h.version != tls.VersionTLS12 || h.peerCN != "mongod" {
			t.Errorf("%s: version %s, client CN %q; want TLS 1.2 and mongod", tc.name, tls.VersionName(h.version), h.peerCN)
		}
	}
	// TLS 1.3 works too.
	if h := connect(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{bundle}}); h.serverErr != nil || h.clientErr != nil || h.version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3: server: %v; client: %v; version %s", h.serverErr, h.clientErr, tls.VersionName(h.version))
	}

	// Refused by the server: another CA's client, no client certificate.
	h := connect(tls12("localhost", keyPair(t, other.Clients[0].Bundle, other.Clients[0].Bundle)))
	var unknown x509.UnknownAuthorityError
	if !errors.As(h.serverErr, &unknown) || h.clientErr == nil {
		t.Errorf("a client certificate from another Init: server: %v; client: %v; want the server to refuse an unknown authority", h.serverErr, h.clientErr)
	}
	h = connect(tls12("localhost"))
	if h.serverErr == nil || !strings.Contains(h.serverErr.Error(), "certificate") || h.clientErr == nil {
		t.Errorf("no client certificate: server: %v; client: %v", h.serverErr, h.clientErr)
	}

	// Refused by the client: another CA, a name not in server.pem.
	cc := tls12("localhost", bundle)
	cc.RootCAs = caPool(t, other.CA)
	if h := connect(cc); !errors.As(h.clientErr, &unknown) || h.serverErr == nil {
		t.Errorf("a client trusting another CA: client: %v; server: %v", h.clientErr, h.serverErr)
	}
	var badName x509.HostnameError
	if h := connect(tls12("db.example.com", bundle)); !errors.As(h.clientErr, &badName) || h.serverErr == nil {
		t.Errorf("a client connecting to db.example.com: client: %v; server: %v", h.clientErr, h.serverErr)
	}
}

// TestOpenSSLClientWithTheBundle: OpenSSL, which mongod's KMIP client
// uses, loads the client's key and certificate from the one bundle file,
// verifies the server at localhost with ca.pem, and the server accepts it.
func TestOpenSSLClientWithTheBundle(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl: %v (.ci/run installs it)", err)
	}
	f, err := kmippki.Init(kmippki.Options{Dir: t.TempDir(), Hosts: []string{"localhost"}, Clients: []string{"mongod"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err error
		cn  string
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: caPool(t, f.CA), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(tc, buf)
		if err == nil && string(buf) != "ping" {
			err = errors.New("read " + string(buf) + ", want ping")
		}
		done <- result{err: err, cn: tc.ConnectionState().PeerCertificates[0].Subject.CommonName}
	}()
	b := f.Clients[0].Bundle
	cmd := exec.Command(openssl, "s_client", "-connect", ln.Addr().String(), "-tls1_2", "-CAfile", f.CA, "-cert", b, "-key", b,
		"-verify_return_error", "-verify_hostname", "localhost", "-quiet")
	cmd.Stdin = strings.NewReader("ping")
	out, cerr := cmd.CombinedOutput()
	ln.Close() // if openssl never connected
	r := <-done
	if r.err != nil || r.cn != "mongod" {
		t.Fatalf("server: %v, client CN %q; openssl s_client: %v\n%s", r.err, r.cn, cerr, out)
	}
}
