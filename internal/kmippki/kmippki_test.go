// SPDX-License-Identifier: Apache-2.0

package kmippki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/kmippki"
)

// now is the fixed time the tests make certificates at.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return now }

func initDir(t *testing.T, dir string, hosts, clients []string) kmippki.Files {
	t.Helper()
	f, err := kmippki.Init(kmippki.Options{Dir: dir, Hosts: hosts, Clients: clients, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// readCert returns the one certificate in the PEM file path.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not one PEM CERTIFICATE", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readKey returns the one PKCS #8 ECDSA key in the PEM file path.
func readKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not one PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("%s holds a %T, want an ECDSA P-256 key", path, k)
	}
	return ek
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// snapshot returns every file in dir with its content and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		m[e.Name()] = fi.Mode().String() + " " + string(b)
	}
	return m
}

func TestInitMakesCertificatesThatVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kmip")
	hosts := []string{"127.0.0.1", "localhost", "::1", "db1.example.com"}
	f := initDir(t, dir, hosts, []string{"mongod", "backup_2.x"})

	ca := readCert(t, f.CA)
	caKey := readKey(t, f.CAKey)
	if !caKey.PublicKey.Equal(ca.PublicKey) {
		t.Fatal("ca.key is not the key of ca.pem")
	}
	host, _ := os.Hostname()
	cn := "byokd KMIP CA " + host
	if len(cn) > 64 {
		cn = cn[:64] // RFC 5280's bound
	}
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero ||
		ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || ca.Subject.CommonName != cn {
		t.Errorf("CA: IsCA %v, MaxPathLen %d (zero %v), KeyUsage %v, CN %q", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage, ca.Subject.CommonName)
	}
	if !ca.NotBefore.Equal(now.Add(-time.Minute)) || !ca.NotAfter.Equal(now.AddDate(10, 0, 0)) {
		t.Errorf("CA valid from %s to %s, want %s to %s", ca.NotBefore, ca.NotAfter, now.Add(-time.Minute), now.AddDate(10, 0, 0))
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}

	srv := readCert(t, f.ServerCert)
	if !readKey(t, f.ServerKey).PublicKey.Equal(srv.PublicKey) {
		t.Fatal("server.key is not the key of server.pem")
	}
	if srv.IsCA || srv.Subject.CommonName != "byokd KMIP server" || srv.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.Equal(srv.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server: IsCA %v, CN %q, KeyUsage %v, ExtKeyUsage %v", srv.IsCA, srv.Subject.CommonName, srv.KeyUsage, srv.ExtKeyUsage)
	}
	if !slices.Equal(srv.DNSNames, []string{"localhost", "db1.example.com"}) || len(srv.IPAddresses) != 2 ||
		!srv.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !srv.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("server SANs: DNS %v, IP %v", srv.DNSNames, srv.IPAddresses)
	}
	if !srv.NotBefore.Equal(now.Add(-time.Minute)) || !srv.NotAfter.Equal(now.AddDate(2, 0, 0)) {
		t.Errorf("server valid from %s to %s", srv.NotBefore, srv.NotAfter)
	}
	at := now.Add(time.Hour)
	for _, h := range hosts {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: h, Roots: pool(ca), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", h, err)
		}
	}
	for _, h := range []string{"db2.example.com", "10.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: h, Roots: pool(ca), CurrentTime: at}); err == nil {
			t.Errorf("server certificate verifies for %s, a name it was not made for", h)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the server certificate verifies as a client's")
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool(ca), CurrentTime: now.AddDate(2, 0, 1)}); err == nil {
		t.Error("the server certificate verifies after two years")
	}

	if len(f.Clients) != 2 {
		t.Fatalf("%d clients, want 2", len(f.Clients))
	}
	serials := map[string]bool{ca.SerialNumber.String(): true, srv.SerialNumber.String(): true}
	for _, c := range f.Clients {
		if c.Cert != filepath.Join(dir, "client-"+c.Name+".pem") || c.Key != filepath.Join(dir, "client-"+c.Name+".key") ||
			c.Bundle != filepath.Join(dir, "client-"+c.Name+".bundle.pem") {
			t.Errorf("client files %+v", c)
		}
		cert := readCert(t, c.Cert)
		key := readKey(t, c.Key)
		if !key.PublicKey.Equal(cert.PublicKey) {
			t.Errorf("%s is not the key of %s", c.Key, c.Cert)
		}
		if cert.Subject.CommonName != c.Name || cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature ||
			!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.DNSNames)+len(cert.IPAddresses) != 0 {
			t.Errorf("client %s: CN %q, IsCA %v, KeyUsage %v, ExtKeyUsage %v, SANs %v %v", c.Name, cert.Subject.CommonName, cert.IsCA, cert.KeyUsage, cert.ExtKeyUsage, cert.DNSNames, cert.IPAddresses)
		}
		if !cert.NotBefore.Equal(now.Add(-time.Minute)) || !cert.NotAfter.Equal(now.AddDate(2, 0, 0)) {
			t.Errorf("client %s valid from %s to %s", c.Name, cert.NotBefore, cert.NotAfter)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("client %s: %v", c.Name, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Errorf("client %s's certificate verifies as a server's", c.Name)
		}
		// The bundle: the key, then the certificate, the same bytes.
		kb, _ := os.ReadFile(c.Key)
		cb, _ := os.ReadFile(c.Cert)
		bb, err := os.ReadFile(c.Bundle)
		if err != nil || !bytes.Equal(bb, append(slices.Clip(kb), cb...)) {
			t.Errorf("%s is not %s then %s (%v)", c.Bundle, c.Key, c.Cert, err)
		}
		serials[cert.SerialNumber.String()] = true
	}
	for _, c := range []*x509.Certificate{ca, srv} {
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.BitLen() < 64 {
			t.Errorf("serial %x: want a random positive 128-bit number", c.SerialNumber)
		}
	}
	if len(serials) != 4 {
		t.Errorf("%d distinct serial numbers for 4 certificates", len(serials))
	}
	for _, p := range []string{f.CA, f.CAKey, f.ServerCert, f.ServerKey} {
		if !filepath.IsAbs(p) || filepath.Dir(p) != dir {
			t.Errorf("path %s: want absolute, in %s", p, dir)
		}
	}
}

func TestInitWithARelativeFolderReturnsAbsolutePaths(t *testing.T) {
	t.Chdir(t.TempDir())
	f := initDir(t, "pki", []string{"localhost"}, []string{"mongod"})
	wd, _ := os.Getwd()
	if f.CA != filepath.Join(wd, "pki", "ca.pem") || f.Clients[0].Bundle != filepath.Join(wd, "pki", "client-mongod.bundle.pem") {
		t.Fatalf("paths %+v", f)
	}
}

func TestFileModes(t *testing.T) {
	// A umask that would take the others' read access away: the folder
	// and the certificates are 0755 and 0644 all the same.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "kmip")
	f := initDir(t, dir, []string{"localhost"}, []string{"mongod"})
	if _, err := kmippki.AddClient(dir, "other", fixedNow); err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{
		"ca.pem": 0o644, "ca.key": 0o600, "server.pem": 0o644, "server.key": 0o600,
		"client-mongod.pem": 0o644, "client-mongod.key": 0o600, "client-mongod.bundle.pem": 0o600,
		"client-other.pem": 0o644, "client-other.key": 0o600, "client-other.bundle.pem": 0o600,
	}
	got := map[string]fs.FileMode{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			t.Errorf("%s: %v, not a regular file", e.Name(), fi.Mode())
		}
		got[e.Name()] = fi.Mode().Perm()
	}
	if !maps.Equal(got, want) {
		t.Errorf("files and modes:\n got %v\nwant %v", got, want)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("folder mode %v (%v), want 0755", fi.Mode().Perm(), err)
	}
	if filepath.Dir(f.CA) != dir {
		t.Errorf("CA at %s", f.CA)
	}
}

func TestInitLeavesAnExistingFolderAsItIs(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o640); err != nil {
		t.Fatal(err)
	}
	initDir(t, dir, []string{"localhost"}, nil)
	fi, _ := os.Stat(dir)
	b, _ := os.ReadFile(filepath.Join(dir, "notes.txt"))
	if fi.Mode().Perm() != 0o750 || string(b) != "mine" {
		t.Fatalf("folder mode %v, notes.txt %q", fi.Mode().Perm(), b)
	}
}

func TestInitNeedsTheParentFolder(t *testing.T) {
	_, err := kmippki.Init(kmippki.Options{Dir: filepath.Join(t.TempDir(), "no", "kmip"), Hosts: []string{"localhost"}, Now: fixedNow})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Init under a missing folder: %v", err)
	}
}

// TestInitRefusesToOverwrite: any one of Init's files in the folder, even
// a dangling symlink, makes it write nothing, and the file stays as it was.
func TestInitRefusesToOverwrite(t *testing.T) {
	for _, name := range []string{"ca.pem", "ca.key", "server.pem", "server.key", "client-mongod.pem", "client-mongod.key", "client-mongod.bundle.pem"} {
		for _, link := range []bool{false, true} {
			dir := t.TempDir()
			p := filepath.Join(dir, name)
			if link {
				if err := os.Symlink(filepath.Join(dir, "nowhere"), p); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(p, []byte("keep me\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			_, err := kmippki.Init(kmippki.Options{Dir: dir, Hosts: []string{"localhost"}, Clients: []string{"mongod"}, Now: fixedNow})
			if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), p) {
				t.Errorf("Init with %s there (symlink %v): %v; want an error naming it that matches fs.ErrExist", name, link, err)
			}
			if after := snapshot(t, dir); !maps.Equal(before, after) {
				t.Errorf("Init with %s there (symlink %v) changed the folder:\n%v\n->\n%v", name, link, before, after)
			}
		}
	}
}

func TestInitTwiceRefusesAndKeepsTheFirst(t *testing.T) {
	dir := t.TempDir()
	initDir(t, dir, []string{"localhost"}, []string{"mongod"})
	before := snapshot(t, dir)
	if len(before) != 7 {
		t.Fatalf("%d files after Init, want 7", len(before))
	}
	// Another client too: the CA is there, so nothing is written at all.
	_, err := kmippki.Init(kmippki.Options{Dir: dir, Hosts: []string{"localhost"}, Clients: []string{"other", "mongod"}, Now: fixedNow})
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), filepath.Join(dir, "ca.")) {
		t.Fatalf("second Init: %v", err)
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Fatal("second Init changed the folder")
	}
}

func TestBadNamesAndHostsAreRejected(t *testing.T) {
	for _, tc := range []struct {
		hosts, clients []string
		want           string
	}{
		{nil, []string{"mongod"}, "at least one host"},
		{[]string{""}, nil, "server host: empty"},
		{[]string{"localhost:5696"}, nil, `"localhost:5696": a name or IP address without a port`},
		{[]string{"[::1]:5696"}, nil, `"[::1]:5696"`},
		{[]string{"*.example.com"}, nil, `"*.example.com"`},
		{[]string{"db.example.com."}, nil, `"db.example.com."`},
		{[]string{"-db.example.com"}, nil, `"-db.example.com"`},
		{[]string{"db-.example.com"}, nil, `"db-.example.com"`},
		{[]string{"a..b"}, nil, `"a..b"`},
		{[]string{"db_1.example.com"}, nil, `"db_1.example.com"`},
		{[]string{strings.Repeat("a", 64) + ".example"}, nil, "1 to 63 bytes"},
		{[]string{"300.1.1.1"}, nil, `"300.1.1.1"`},
		{[]string{"0.0.0.0"}, nil, `"0.0.0.0": the unspecified address`},
		{[]string{"::"}, nil, `"::": the unspecified address`},
		{[]string{"fe80::1%eth0"}, nil, `"fe80::1%eth0": an IP address with a zone`},
		{[]string{"localhost", "LocalHost"}, nil, `"LocalHost": given twice`},
		{[]string{"127.0.0.1", "::ffff:127.0.0.1"}, nil, `"::ffff:127.0.0.1": given twice`},
		{[]string{"localhost"}, []string{""}, `client name "": must be 1 to 64 bytes`},
		{[]string{"localhost"}, []string{strings.Repeat("m", 65)}, "must be 1 to 64 bytes"},
		{[]string{"localhost"}, []string{"mongo d"}, `"mongo d": only letters`},
		{[]string{"localhost"}, []string{"../mongod"}, `"../mongod": only letters`},
		{[]string{"localhost"}, []string{"mongöd"}, `only letters`},
		{[]string{"localhost"}, []string{"mongod", "x.bundle"}, `"x.bundle": must not end in .bundle`},
		{[]string{"localhost"}, []string{"mongod", "mongod"}, `"mongod": given twice`},
	} {
		dir := t.TempDir()
		_, err := kmippki.Init(kmippki.Options{Dir: dir, Hosts: tc.hosts, Clients: tc.clients, Now: fixedNow})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Init(hosts %q, clients %q): %v; want an error with %q", tc.hosts, tc.clients, err, tc.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("Init(hosts %q, clients %q) wrote %d files", tc.hosts, tc.clients, len(ents))
		}
	}
	// The longest name there can be, and every character allowed.
	long := strings.Repeat("m", 64)
	initDir(t, t.TempDir(), []string{"localhost"}, []string{long, "AZaz09._-"})
	if err := kmippki.CheckHost(strings.Repeat("a", 63) + ".example"); err != nil {
		t.Errorf("a 63-byte label: %v", err)
	}
}

func TestAddClient(t *testing.T) {
	dir := t.TempDir()
	f := initDir(t, dir, []string{"localhost"}, []string{"mongod"})
	ca := readCert(t, f.CA)
	later := now.AddDate(1, 0, 0)
	c, err := kmippki.AddClient(dir, "mongod-2", func() time.Time { return later })
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "mongod-2" || c.Cert != filepath.Join(dir, "client-mongod-2.pem") || c.Key != filepath.Join(dir, "client-mongod-2.key") || c.Bundle != filepath.Join(dir, "client-mongod-2.bundle.pem") {
		t.Errorf("AddClient returned %+v", c)
	}
	cert := readCert(t, c.Cert)
	if !readKey(t, c.Key).PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != "mongod-2" {
		t.Errorf("client-mongod-2: CN %q, or its key is not its certificate's", cert.Subject.CommonName)
	}
	if !cert.NotBefore.Equal(later.Add(-time.Minute)) || !cert.NotAfter.Equal(later.AddDate(2, 0, 0)) {
		t.Errorf("added client valid from %s to %s", cert.NotBefore, cert.NotAfter)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: later, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("added client: %v", err)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("added client ExtKeyUsage %v", cert.ExtKeyUsage)
	}
	if cert.SerialNumber.Cmp(readCert(t, f.Clients[0].Cert).SerialNumber) == 0 {
		t.Error("the added client has the first client's serial")
	}

	// Again, or for the first client: refused, nothing changes.
	before := snapshot(t, dir)
	for _, name := range []string{"mongod-2", "mongod"} {
		_, err := kmippki.AddClient(dir, name, fixedNow)
		if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), filepath.Join(dir, "client-"+name+".key")) {
			t.Errorf("AddClient %s again: %v", name, err)
		}
	}
	// Only the bundle left over from somewhere: refused too.
	if err := os.Remove(filepath.Join(dir, "client-mongod-2.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "client-mongod-2.pem")); err != nil {
		t.Fatal(err)
	}
	delete(before, "client-mongod-2.key")
	delete(before, "client-mongod-2.pem")
	if _, err := kmippki.AddClient(dir, "mongod-2", fixedNow); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "client-mongod-2.bundle.pem") {
		t.Errorf("AddClient with only the bundle there: %v", err)
	}
	if _, err := kmippki.AddClient(dir, "bad name", fixedNow); err == nil || !strings.Contains(err.Error(), `"bad name"`) {
		t.Errorf("AddClient with a bad name: %v", err)
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Error("refused AddClients changed the folder")
	}
}

func TestAddClientKeepsWithinTheCA(t *testing.T) {
	dir := t.TempDir()
	f := initDir(t, dir, []string{"localhost"}, nil)
	ca := readCert(t, f.CA)
	// Nine and a half years on: the client certificate ends with the CA.
	late := now.AddDate(9, 6, 0)
	c, err := kmippki.AddClient(dir, "late", func() time.Time { return late })
	if err != nil {
		t.Fatal(err)
	}
	if got := readCert(t, c.Cert).NotAfter; !got.Equal(ca.NotAfter) {
		t.Errorf("client certificate made 6 months before the CA expires ends %s, want the CA's end %s", got, ca.NotAfter)
	}
	// Past the CA's end: refused.
	_, err = kmippki.AddClient(dir, "too-late", func() time.Time { return now.AddDate(10, 0, 1) })
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("AddClient after the CA expired: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "client-too-late.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("AddClient after the CA expired left client-too-late.pem: %v", err)
	}
}

func TestAddClientNeedsItsCA(t *testing.T) {
	// No CA at all.
	empty := t.TempDir()
	if _, err := kmippki.AddClient(empty, "mongod", fixedNow); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "ca.pem") {
		t.Errorf("AddClient without a CA: %v", err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("AddClient without a CA wrote %d files", len(ents))
	}
	if _, err := kmippki.AddClient(filepath.Join(empty, "missing"), "mongod", fixedNow); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("AddClient into a missing folder: %v", err)
	}

	// The key of another CA.
	a, b := t.TempDir(), t.TempDir()
	initDir(t, a, []string{"localhost"}, nil)
	fb := initDir(t, b, []string{"localhost"}, nil)
	key, _ := os.ReadFile(fb.CAKey)
	if err := os.WriteFile(filepath.Join(a, "ca.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := kmippki.AddClient(a, "mongod", fixedNow); err == nil || !strings.Contains(err.Error(), "is not the key of the CA certificate") {
		t.Errorf("AddClient with another CA's key: %v", err)
	}

	// A server certificate in place of the CA's.
	srv, _ := os.ReadFile(fb.ServerCert)
	if err := os.WriteFile(fb.CA, srv, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kmippki.AddClient(b, "mongod", fixedNow); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("AddClient with a server certificate as the CA: %v", err)
	}
	// Garbage for a key.
	if err := os.WriteFile(filepath.Join(a, "ca.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := kmippki.AddClient(a, "mongod", fixedNow); err == nil || !strings.Contains(err.Error(), "holds no PEM PRIVATE KEY") {
		t.Errorf("AddClient with garbage for a key: %v", err)
	}
	for _, d := range []string{a, b} {
		if _, err := os.Lstat(filepath.Join(d, "client-mongod.key")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused AddClient left client-mongod.key in %s", d)
		}
	}
}

// Layout names the files Init writes, so that a caller can find them
// without running Init (byokd-dev reuses its dev PKI).
func TestLayoutIsWhereInitWrites(t *testing.T) {
	dir := t.TempDir()
	got, err := kmippki.Init(kmippki.Options{Dir: dir, Hosts: []string{"localhost"}, Clients: []string{"mongod", "pbm"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := kmippki.Layout(dir, "mongod", "pbm"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Init wrote %+v, Layout says %+v", got, want)
	}
}
