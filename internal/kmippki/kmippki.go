// SPDX-License-Identifier: Apache-2.0

// Package kmippki makes the certificates with which byokd's KMIP server and
// its clients (mongod) authenticate each other over TLS: a CA of its own,
// the server's certificate and one client certificate per client identity,
// each with its ECDSA P-256 key, all in one folder.
//
// The folder holds:
//
//	ca.pem                    0644  the CA certificate: byokd and the clients trust it
//	ca.key                    0600  the CA key: for AddClient only, neither byokd nor mongod reads it
//	server.pem                0644  byokd's certificate, for the names in Options.Hosts
//	server.key                0600  its key
//	client-NAME.pem           0644  the certificate of client NAME (Subject CN = NAME)
//	client-NAME.key           0600  its key
//	client-NAME.bundle.pem    0600  the key then the certificate in one file, as mongod's
//	                                security.kmip.clientCertificateFile takes them
//
// Every file is created through atomicfile, whole or not at all, and never
// over an existing file.
package kmippki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/byokd/byokd/internal/atomicfile"
)

// The names of the files in the folder that are not a client's.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

// Validity of the certificates, from the time they are made.
const (
	CAYears     = 10
	ServerYears = 2
	ClientYears = 2
)

// ServerCommonName is the server certificate's Subject Common Name; the
// clients check its names (SANs), not this.
const ServerCommonName = "byokd KMIP server"

const (
	certMode fs.FileMode = 0o644
	keyMode  fs.FileMode = 0o600
	dirMode  fs.FileMode = 0o755
	// backdate is how far NotBefore is set before now, for clocks that
	// lag a little behind this one.
	backdate = time.Minute
	// maxClientName is RFC 5280's upper bound for a Common Name.
	maxClientName = 64
)

// Options is what Init makes.
type Options struct {
	// Dir is the output folder, made 0755 if missing (its parent must
	// exist).
	Dir string
	// Hosts are the names the server certificate holds: IP addresses
	// become IP SANs, others DNS SANs. At least one.
	Hosts []string
	// Clients are the client identities: one client certificate for each,
	// with Subject CN the name. Each is 1 to 64 bytes of A-Z, a-z, 0-9,
	// '.', '_' and '-', and does not end in ".bundle". It may be empty:
	// AddClient adds clients later.
	Clients []string
	// Now tells the time; nil is time.Now.
	Now func() time.Time
}

// Files are the absolute paths of the files Init wrote.
type Files struct {
	CA, CAKey, ServerCert, ServerKey string
	Clients                          []ClientFiles
}

// ClientFiles are the absolute paths of one client's files.
type ClientFiles struct {
	Name string
	// Cert and Key are the certificate and its key; Bundle is the key
	// then the certificate in one file.
	Cert, Key, Bundle string
}

// Layout is where Init puts its files in dir (absolute) for clients.
func Layout(dir string, clients ...string) Files {
	f := Files{
		CA:         filepath.Join(dir, CAFile),
		CAKey:      filepath.Join(dir, CAKeyFile),
		ServerCert: filepath.Join(dir, ServerCertFile),
		ServerKey:  filepath.Join(dir, ServerKeyFile),
	}
	for _, c := range clients {
		f.Clients = append(f.Clients, ClientLayout(dir, c))
	}
	return f
}

// ClientLayout is where client name's files are in dir.
func ClientLayout(dir, name string) ClientFiles {
	return ClientFiles{
		Name:   name,
		Cert:   filepath.Join(dir, ClientCertFile(name)),
		Key:    filepath.Join(dir, ClientKeyFile(name)),
		Bundle: filepath.Join(dir, ClientBundleFile(name)),
	}
}

// ClientCertFile is the name of client name's certificate file.
func ClientCertFile(name string) string { return "client-" + name + ".pem" }

// ClientKeyFile is the name of client name's key file.
func ClientKeyFile(name string) string { return "client-" + name + ".key" }

// ClientBundleFile is the name of client name's file with its key then its
// certificate.
func ClientBundleFile(name string) string { return "client-" + name + ".bundle.pem" }

// CheckClientName returns an error, naming name, unless it can be a
// client identity.
func CheckClientName(name string) error {
	if name == "" || len(name) > maxClientName {
		return fmt.Errorf("client name %q: must be 1 to %d bytes long", name, maxClientName)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("client name %q: only letters A-Z and a-z, digits, '.', '_' and '-' are allowed", name)
		}
	}
	// client-X.bundle's certificate would be client-X's bundle.
	if strings.HasSuffix(name, ".bundle") {
		return fmt.Errorf("client name %q: must not end in .bundle (its certificate file would be client %s's bundle)", name, strings.TrimSuffix(name, ".bundle"))
	}
	return nil
}

// CheckHost returns an error, naming host, unless it can be a name of the
// server certificate: an IP address (not the unspecified one, without a
// zone) or a DNS name (letters, digits and '-' in labels of 1 to 63 bytes,
// no trailing dot, no wildcard).
func CheckHost(host string) error {
	_, _, err := parseHost(host)
	return err
}

// parseHost returns host as an IP address or a DNS name, the other nil or
// empty.
func parseHost(host string) (net.IP, string, error) {
	if host == "" {
		return nil, "", errors.New("server host: empty")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		switch {
		case a.Zone() != "":
			return nil, "", fmt.Errorf("server host %q: an IP address with a zone cannot be in a certificate", host)
		case a.IsUnspecified():
			return nil, "", fmt.Errorf("server host %q: the unspecified address is no address a client connects to", host)
		}
		return net.IP(a.Unmap().AsSlice()), "", nil
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return nil, "", fmt.Errorf("server host %q: a name or IP address without a port", host)
	}
	if len(host) > 253 {
		return nil, "", fmt.Errorf("server host %q: a DNS name is at most 253 bytes", host)
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return nil, "", fmt.Errorf("server host %q: not an IP address, nor a DNS name (labels of 1 to 63 bytes, no trailing dot)", host)
		}
		for i, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(l)-1) {
				return nil, "", fmt.Errorf("server host %q: not an IP address, nor a DNS name (letters, digits and inner '-' only)", host)
			}
		}
	}
	// No top-level domain is all digits: 300.1.1.1 is a mistyped address.
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return nil, "", fmt.Errorf("server host %q: not an IP address, nor a DNS name (its last label is all digits)", host)
	}
	return nil, host, nil
}

// Init makes a new CA, the server certificate for o.Hosts and a client
// certificate for each of o.Clients, and writes them with their keys in
// o.Dir. The CA is valid for CAYears (10) years, the server and client
// certificates for ServerYears and ClientYears (2): then run AddClient for
// new client certificates, or Init into a new folder.
//
// Init refuses, writing nothing, when any of its files already exists in
// o.Dir: its error names the file and matches fs.ErrExist. If it fails
// later, it removes the files it wrote.
func Init(o Options) (Files, error) {
	if o.Dir == "" {
		return Files{}, errors.New("kmip PKI: no folder given")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return Files{}, err
	}
	if len(o.Hosts) == 0 {
		return Files{}, errors.New("kmip PKI: the server certificate needs at least one host name or IP address")
	}
	var ips []net.IP
	var dnsNames []string
	seen := map[string]bool{}
	for _, h := range o.Hosts {
		ip, name, err := parseHost(h)
		if err != nil {
			return Files{}, err
		}
		key := strings.ToLower(name)
		if ip != nil {
			key = ip.String()
		}
		if seen[key] {
			return Files{}, fmt.Errorf("server host %q: given twice", h)
		}
		seen[key] = true
		if ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, name)
		}
	}
	names := []string{CAKeyFile, CAFile, ServerKeyFile, ServerCertFile}
	clientSeen := map[string]bool{}
	for _, c := range o.Clients {
		if err := CheckClientName(c); err != nil {
			return Files{}, err
		}
		if clientSeen[c] {
			return Files{}, fmt.Errorf("client name %q: given twice", c)
		}
		clientSeen[c] = true
		names = append(names, ClientKeyFile(c), ClientCertFile(c), ClientBundleFile(c))
	}
	now := nowOf(o.Now)

	d, err := openDir(dir, true)
	if err != nil {
		return Files{}, err
	}
	defer d.File.Close()
	if err := refuseExisting(dir, names); err != nil {
		return Files{}, err
	}

	caKey, caKeyPEM, err := newKey()
	if err != nil {
		return Files{}, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: caCommonName()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(CAYears, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := sign(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return Files{}, fmt.Errorf("kmip PKI: make the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, err
	}
	issuer := &authority{cert: ca, key: caKey}

	srvKey, srvKeyPEM, err := newKey()
	if err != nil {
		return Files{}, err
	}
	srvDER, err := issuer.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: ServerCommonName},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.AddDate(ServerYears, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, srvKey.Public())
	if err != nil {
		return Files{}, fmt.Errorf("kmip PKI: make the server certificate: %w", err)
	}

	w := &writer{dir: d}
	w.add(CAKeyFile, caKeyPEM, keyMode)
	w.add(CAFile, certPEM(caDER), certMode)
	w.add(ServerKeyFile, srvKeyPEM, keyMode)
	w.add(ServerCertFile, certPEM(srvDER), certMode)
	files := Layout(dir)
	for _, c := range o.Clients {
		cf, err := issuer.client(w, dir, c, now)
		if err != nil {
			return Files{}, err
		}
		files.Clients = append(files.Clients, cf)
	}
	if err := w.write(); err != nil {
		return Files{}, err
	}
	return files, nil
}

// AddClient issues a certificate for one more client, name, with the CA in
// dir (ca.pem and ca.key), valid for ClientYears (2) years but not past the
// CA. It refuses, writing nothing, when any of the client's files already
// exists: its error names the file and matches fs.ErrExist.
func AddClient(dir, name string, now func() time.Time) (ClientFiles, error) {
	if err := CheckClientName(name); err != nil {
		return ClientFiles{}, err
	}
	if dir == "" {
		return ClientFiles{}, errors.New("kmip PKI: no folder given")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return ClientFiles{}, err
	}
	t := nowOf(now)
	d, err := openDir(dir, false)
	if err != nil {
		return ClientFiles{}, err
	}
	defer d.File.Close()
	if err := refuseExisting(dir, []string{ClientKeyFile(name), ClientCertFile(name), ClientBundleFile(name)}); err != nil {
		return ClientFiles{}, err
	}
	issuer, err := loadAuthority(dir)
	if err != nil {
		return ClientFiles{}, err
	}
	if !t.Before(issuer.cert.NotAfter) {
		return ClientFiles{}, fmt.Errorf("kmip PKI: the CA in %s expired on %s: make a new one (byokctl kmip init into a new folder)",
			filepath.Join(dir, CAFile), issuer.cert.NotAfter.UTC().Format(time.DateOnly))
	}
	w := &writer{dir: d}
	cf, err := issuer.client(w, dir, name, t)
	if err != nil {
		return ClientFiles{}, err
	}
	if err := w.write(); err != nil {
		return ClientFiles{}, err
	}
	return cf, nil
}

// authority is a CA that issues certificates.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// issue signs tmpl (with a new serial, and a NotAfter no later than the
// CA's) for pub.
func (a *authority) issue(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	return sign(tmpl, a.cert, pub, a.key)
}

// client makes client name's key and certificate and adds their files to
// w.
func (a *authority) client(w *writer, dir, name string, now time.Time) (ClientFiles, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return ClientFiles{}, err
	}
	der, err := a.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.AddDate(ClientYears, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	if err != nil {
		return ClientFiles{}, fmt.Errorf("kmip PKI: make the certificate of client %s: %w", name, err)
	}
	cert := certPEM(der)
	bundle := make([]byte, 0, len(keyPEM)+len(cert))
	bundle = append(append(bundle, keyPEM...), cert...)
	w.add(ClientKeyFile(name), keyPEM, keyMode)
	w.add(ClientCertFile(name), cert, certMode)
	w.add(ClientBundleFile(name), bundle, keyMode)
	return ClientLayout(dir, name), nil
}

// loadAuthority reads the CA in dir and checks that its key is the key of
// its certificate.
func loadAuthority(dir string) (*authority, error) {
	certFile, keyFile := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("kmip PKI: the CA certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("kmip PKI: %s holds no PEM CERTIFICATE", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("kmip PKI: %s: %w", certFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("kmip PKI: %s is not a CA certificate", certFile)
	}
	b, err = os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("kmip PKI: the CA key: %w", err)
	}
	block, _ = pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("kmip PKI: %s holds no PEM PRIVATE KEY (PKCS #8)", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parse error says nothing of the key's bytes.
		return nil, fmt.Errorf("kmip PKI: %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("kmip PKI: %s: a %T cannot sign", keyFile, k)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("kmip PKI: %s is not the key of the CA certificate %s", keyFile, certFile)
	}
	return &authority{cert: cert, key: signer}, nil
}

// sign makes a certificate of tmpl with a new random 128-bit serial.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
}

// newSerial returns a random serial number of 128 bits (positive, as RFC
// 5280 wants it).
func newSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		if s := new(big.Int).SetBytes(b[:]); s.Sign() > 0 {
			return s, nil
		}
	}
}

// newKey makes an ECDSA P-256 key and returns it with its PKCS #8 PEM.
func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("kmip PKI: make a key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("kmip PKI: encode a key: %w", err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// caCommonName is "byokd KMIP CA <hostname>", at most 64 bytes.
func caCommonName() string {
	const prefix = "byokd KMIP CA"
	h, err := os.Hostname()
	if err != nil || h == "" {
		return prefix
	}
	if n := maxClientName - len(prefix) - 1; len(h) > n {
		h = h[:n]
	}
	return prefix + " " + h
}

func nowOf(now func() time.Time) time.Time {
	if now == nil {
		return time.Now()
	}
	return now()
}

// openDir opens dir, making it with mode 0755 first if create and it is
// missing.
func openDir(dir string, create bool) (atomicfile.Dir, error) {
	if create {
		if err := os.Mkdir(dir, dirMode); err == nil {
			// Whatever the umask: the clients must reach their files.
			if err := os.Chmod(dir, dirMode); err != nil {
				return atomicfile.Dir{}, err
			}
		} else if !errors.Is(err, fs.ErrExist) {
			return atomicfile.Dir{}, fmt.Errorf("kmip PKI: %w", err)
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return atomicfile.Dir{}, fmt.Errorf("kmip PKI: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return atomicfile.Dir{}, err
	}
	if !fi.IsDir() {
		f.Close()
		return atomicfile.Dir{}, fmt.Errorf("kmip PKI: %s is not a folder", dir)
	}
	d := atomicfile.NewDir(f)
	if testSteps != nil {
		testSteps(&d.Steps)
	}
	return d, nil
}

// testSteps, set by tests, changes the steps of the writes.
var testSteps func(*atomicfile.Steps)

// refuseExisting returns an error matching fs.ErrExist, naming the file,
// if any of names exists in dir (a dangling symlink included).
func refuseExisting(dir string, names []string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		_, err := os.Lstat(p)
		if err == nil {
			return fmt.Errorf("kmip PKI: %s already exists; nothing was written (remove it, or use another folder): %w", p, fs.ErrExist)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kmip PKI: %w", err)
		}
	}
	return nil
}

// writer creates files in a folder, none over an existing file, and
// removes those it created when one fails.
type writer struct {
	dir   atomicfile.Dir
	files []pending
}

type pending struct {
	name string
	data []byte
	mode fs.FileMode
}

func (w *writer) add(name string, data []byte, mode fs.FileMode) {
	w.files = append(w.files, pending{name, data, mode})
}

func (w *writer) write() error {
	for i, f := range w.files {
		if err := w.dir.Create(f.name, f.data, f.mode); err != nil {
			ours := w.files[:i]
			if errors.Is(err, fs.ErrExist) {
				// A file that appeared since refuseExisting: not ours.
				err = fmt.Errorf("kmip PKI: %s already exists: %w", filepath.Join(w.dir.File.Name(), f.name), fs.ErrExist)
			} else {
				// Only the folder's fsync failed, maybe, and the file
				// is in place.
				err = fmt.Errorf("kmip PKI: %w", err)
				ours = w.files[:i+1]
			}
			var errs []error
			for _, done := range ours {
				if rerr := os.Remove(filepath.Join(w.dir.File.Name(), done.name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					errs = append(errs, rerr)
				}
			}
			if len(errs) > 0 {
				err = errors.Join(append([]error{err, errors.New("and the files written before could not all be removed")}, errs...)...)
			}
			return err
		}
	}
	return nil
}
