// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// chowned is a call of lchown.
type chowned struct {
	path     string
	uid, gid int
}

// fakeSystem makes kmip see euid and the users in users (name to "uid:gid")
// and record its chowns instead of making them, unless real.
func fakeSystem(t *testing.T, euid int, users map[string]string, real bool) *[]chowned {
	t.Helper()
	oldEuid, oldLookup, oldChown := geteuid, lookupUser, lchown
	t.Cleanup(func() { geteuid, lookupUser, lchown = oldEuid, oldLookup, oldChown })
	geteuid = func() int { return euid }
	lookupUser = func(name string) (*user.User, error) {
		ids, ok := users[name]
		if !ok {
			return nil, user.UnknownUserError(name)
		}
		uid, gid, _ := strings.Cut(ids, ":")
		return &user.User{Username: name, Uid: uid, Gid: gid}, nil
	}
	var calls []chowned
	lchown = func(path string, uid, gid int) error {
		calls = append(calls, chowned{path, uid, gid})
		if real {
			return os.Lchown(path, uid, gid)
		}
		return nil
	}
	return &calls
}

func runKMIP(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(append([]string{"kmip"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

// exitCode is the code run's error exits with.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

// files returns each file in dir with its mode and content.
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
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
		m[e.Name()] = fi.Mode().String() + "\n" + string(b)
	}
	return m
}

func TestKMIPInit(t *testing.T) {
	calls := fakeSystem(t, 1000, nil, false)
	dir := filepath.Join(t.TempDir(), "kmip")
	out, err := runKMIP("init", "--dir", dir, "--host", "db1.example.com", "--host", "10.1.2.3", "--client", "mongod", "--client", "mongod-b")
	if err != nil {
		t.Fatalf("kmip init: %v\n%s", err, out)
	}
	if len(*calls) != 0 {
		t.Errorf("chowns with no owner given, not as root: %v", *calls)
	}
	modes := map[string]string{}
	for name, f := range files(t, dir) {
		modes[name], _, _ = strings.Cut(f, "\n")
	}
	want := map[string]string{
		"ca.pem": "-rw-r--r--", "ca.key": "-rw-------", "server.pem": "-rw-r--r--", "server.key": "-rw-------",
		"client-mongod.pem": "-rw-r--r--", "client-mongod.key": "-rw-------", "client-mongod.bundle.pem": "-rw-------",
		"client-mongod-b.pem": "-rw-r--r--", "client-mongod-b.key": "-rw-------", "client-mongod-b.bundle.pem": "-rw-------",
	}
	if !maps.Equal(modes, want) {
		t.Errorf("files:\n got %v\nwant %v", modes, want)
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("the output lists no %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "Wrote in "+dir+":\n") {
		t.Errorf("the output does not say where the files are:\n%s", out)
	}

	config := `
[kmip]
enabled = true
listen = "db1.example.com:5696"
ca_file = "` + dir + `/ca.pem"
cert_file = "` + dir + `/server.pem"
key_file = "` + dir + `/server.key"
allowed_clients = ["mongod", "mongod-b"]
`
	if !strings.Contains(out, config) {
		t.Errorf("the output has no\n%s\nin\n%s", config, out)
	}
	for _, c := range []string{"mongod", "mongod-b"} {
		snippet := `
security:
  enableEncryption: true
  kmip:
    serverName: db1.example.com
    port: 5696
    serverCAFile: ` + dir + `/ca.pem
    clientCertificateFile: ` + dir + `/client-` + c + `.bundle.pem
    keyStatePollingSeconds: 30
`
		if !strings.Contains(out, "mongod.conf of client "+c+" ") || !strings.Contains(out, snippet) {
			t.Errorf("the output has no mongod.conf for %s:\n%s\nin\n%s", c, snippet, out)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Error("the output shows a key")
	}

	// What the output points at works: mongod's bundle loads, and holds a
	// certificate of ca.pem for client mongod; server.pem is for the hosts.
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-mongod.bundle.pem"), filepath.Join(dir, "client-mongod.bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots.AppendCertsFromPEM(caPEM)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || leaf.Subject.CommonName != "mongod" {
		t.Errorf("client-mongod.bundle.pem: CN %q, %v", leaf.Subject.CommonName, err)
	}
	srv := readCert(t, filepath.Join(dir, "server.pem"))
	for _, h := range []string{"db1.example.com", "10.1.2.3"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: h}); err != nil {
			t.Errorf("server.pem for %s: %v", h, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err == nil {
		t.Error("server.pem holds localhost, though --host was given")
	}

	// Again: refused, nothing changes.
	before := files(t, dir)
	out, err = runKMIP("init", "--dir", dir, "--client", "mongod")
	if exitCode(err) != 1 || !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), dir+"/ca.") {
		t.Errorf("kmip init again: %v (exit %d)\n%s", err, exitCode(err), out)
	}
	if !maps.Equal(before, files(t, dir)) {
		t.Error("kmip init again changed the files")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKMIPInitDefaultHosts(t *testing.T) {
	fakeSystem(t, 1000, nil, false)
	dir := t.TempDir()
	out, err := runKMIP("init", "--dir", dir, "--client", "mongod")
	if err != nil {
		t.Fatalf("kmip init: %v\n%s", err, out)
	}
	srv := readCert(t, filepath.Join(dir, "server.pem"))
	if !slices.Equal(srv.DNSNames, []string{"localhost"}) || len(srv.IPAddresses) != 1 || srv.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("server.pem for %v %v, want localhost and 127.0.0.1", srv.DNSNames, srv.IPAddresses)
	}
	if !strings.Contains(out, "\nlisten = \"127.0.0.1:5696\"\n") || !strings.Contains(out, "\n    serverName: 127.0.0.1\n") {
		t.Errorf("the output does not say 127.0.0.1:\n%s", out)
	}
	if strings.Contains(out, "Note:") {
		t.Errorf("notes on owners, not as root:\n%s", out)
	}
}

// TestKMIPInitOwners: as root, server.key goes to byokd when that user
// exists, or to --server-owner; the client keys and bundles to
// --client-owner; an unknown user is an error before anything is written;
// a failed chown removes all that was written.
func TestKMIPInitOwners(t *testing.T) {
	users := map[string]string{"byokd": "990:991", "mongodb": "980:981", "svc": "970:972"}
	t.Run("default", func(t *testing.T) {
		calls := fakeSystem(t, 0, users, false)
		dir := t.TempDir()
		out, err := runKMIP("init", "--dir", dir, "--client", "mongod", "--client-owner", "mongodb")
		if err != nil {
			t.Fatalf("kmip init: %v\n%s", err, out)
		}
		want := []chowned{
			{filepath.Join(dir, "server.key"), 990, 991},
			{filepath.Join(dir, "client-mongod.key"), 980, 981},
			{filepath.Join(dir, "client-mongod.bundle.pem"), 980, 981},
		}
		if !slices.Equal(*calls, want) {
			t.Errorf("chowns %v, want %v", *calls, want)
		}
		if strings.Contains(out, "Note:") {
			t.Errorf("notes on owners, with owners given:\n%s", out)
		}
	})
	t.Run("explicit", func(t *testing.T) {
		calls := fakeSystem(t, 0, users, false)
		dir := t.TempDir()
		if out, err := runKMIP("init", "--dir", dir, "--client", "mongod", "--server-owner", "svc"); err != nil {
			t.Fatalf("kmip init: %v\n%s", err, out)
		}
		if want := []chowned{{filepath.Join(dir, "server.key"), 970, 972}}; !slices.Equal(*calls, want) {
			t.Errorf("chowns %v, want %v", *calls, want)
		}
	})
	t.Run("none", func(t *testing.T) {
		// --server-owner "" as root, or no byokd user: root keeps all,
		// and the output says what to do.
		for _, tc := range []struct {
			users map[string]string
			args  []string
		}{
			{users, []string{"--server-owner", ""}},
			{map[string]string{"mongodb": "980:981"}, nil},
		} {
			calls := fakeSystem(t, 0, tc.users, false)
			dir := t.TempDir()
			out, err := runKMIP(append([]string{"init", "--dir", dir, "--client", "mongod"}, tc.args...)...)
			if err != nil {
				t.Fatalf("kmip init %q: %v\n%s", tc.args, err, out)
			}
			if len(*calls) != 0 {
				t.Errorf("kmip init %q: chowns %v", tc.args, *calls)
			}
			if !strings.Contains(out, "Note: "+filepath.Join(dir, "server.key")+" belongs to root") || !strings.Contains(out, "Note: the client keys") {
				t.Errorf("kmip init %q: no notes on the owners:\n%s", tc.args, out)
			}
		}
	})
	t.Run("not root", func(t *testing.T) {
		// Not as root, the default is nobody, even with a byokd user.
		calls := fakeSystem(t, 1000, users, false)
		if out, err := runKMIP("init", "--dir", t.TempDir(), "--client", "mongod"); err != nil || len(*calls) != 0 {
			t.Errorf("kmip init not as root: %v, chowns %v\n%s", err, *calls, out)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		for _, flag := range []string{"--server-owner", "--client-owner"} {
			calls := fakeSystem(t, 0, users, false)
			dir := filepath.Join(t.TempDir(), "kmip")
			out, err := runKMIP("init", "--dir", dir, "--client", "mongod", flag, "nosuch")
			if exitCode(err) != 1 || !strings.Contains(err.Error(), flag+" nosuch: no such user") {
				t.Errorf("kmip init %s nosuch: %v\n%s", flag, err, out)
			}
			if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) || len(*calls) != 0 {
				t.Errorf("kmip init %s nosuch made %s (%v) or chowned %v", flag, dir, err, *calls)
			}
		}
	})
	t.Run("chown fails", func(t *testing.T) {
		fakeSystem(t, 0, users, false)
		lchown = func(path string, uid, gid int) error {
			if strings.HasSuffix(path, ".bundle.pem") {
				return &os.PathError{Op: "lchown", Path: path, Err: syscall.EPERM}
			}
			return nil
		}
		dir := t.TempDir()
		out, err := runKMIP("init", "--dir", dir, "--client", "mongod", "--client-owner", "mongodb")
		if err == nil || !strings.Contains(err.Error(), "give "+filepath.Join(dir, "client-mongod.bundle.pem")+" to mongodb") ||
			!strings.Contains(err.Error(), "operation not permitted") || !strings.Contains(err.Error(), "removed") {
			t.Errorf("kmip init with a failing chown: %v\n%s", err, out)
		}
		if f := files(t, dir); len(f) != 0 {
			t.Errorf("a failed chown left %v", slices.Sorted(maps.Keys(f)))
		}
		// Nothing in the way of the next try.
		lchown = func(string, int, int) error { return nil }
		if out, err := runKMIP("init", "--dir", dir, "--client", "mongod", "--client-owner", "mongodb"); err != nil {
			t.Errorf("kmip init after a failed chown: %v\n%s", err, out)
		}
	})
	t.Run("real chown", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown to another user needs root")
		}
		fakeSystem(t, 0, users, true)
		dir := t.TempDir()
		if out, err := runKMIP("init", "--dir", dir, "--client", "mongod", "--client-owner", "mongodb"); err != nil {
			t.Fatalf("kmip init: %v\n%s", err, out)
		}
		for name, want := range map[string]string{
			"server.key": "990:991", "client-mongod.key": "980:981", "client-mongod.bundle.pem": "980:981",
			"ca.key": "0:0", "client-mongod.pem": "0:0",
		} {
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if got := strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid)); got != want {
				t.Errorf("%s belongs to %s, want %s", name, got, want)
			}
		}
	})
}

func TestKMIPAddClient(t *testing.T) {
	calls := fakeSystem(t, 1000, map[string]string{"mongodb": "980:981"}, false)
	dir := t.TempDir()
	if out, err := runKMIP("init", "--dir", dir, "--host", "::1", "--host", "localhost", "--client", "mongod"); err != nil {
		t.Fatalf("kmip init: %v\n%s", err, out)
	}
	if out, err := runKMIP("init", "--dir", dir, "--client", "mongod"); err == nil {
		t.Fatalf("kmip init twice succeeded\n%s", out)
	}
	out, err := runKMIP("add-client", "--dir", dir, "--client-owner", "mongodb", "mongod-2")
	if err != nil {
		t.Fatalf("kmip add-client: %v\n%s", err, out)
	}
	want := []chowned{{filepath.Join(dir, "client-mongod-2.key"), 980, 981}, {filepath.Join(dir, "client-mongod-2.bundle.pem"), 980, 981}}
	if !slices.Equal(*calls, want) {
		t.Errorf("chowns %v, want %v", *calls, want)
	}
	snippet := `
security:
  enableEncryption: true
  kmip:
    serverName: '::1'
    port: 5696
    serverCAFile: ` + dir + `/ca.pem
    clientCertificateFile: ` + dir + `/client-mongod-2.bundle.pem
    keyStatePollingSeconds: 30
`
	if !strings.Contains(out, `Add "mongod-2" to allowed_clients`) || !strings.Contains(out, snippet) {
		t.Errorf("the output has no allowed_clients hint or no\n%s\nin\n%s", snippet, out)
	}
	leaf := readCert(t, filepath.Join(dir, "client-mongod-2.pem"))
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "ca.pem")))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || leaf.Subject.CommonName != "mongod-2" {
		t.Errorf("client-mongod-2.pem: CN %q, %v", leaf.Subject.CommonName, err)
	}

	before := files(t, dir)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--dir", dir, "mongod-2"}, 1, "client-mongod-2.key already exists"},
		{[]string{"--dir", dir, "mongod"}, 1, "client-mongod.key already exists"},
		{[]string{"--dir", dir}, 2, "usage: byokctl kmip"},
		{[]string{"--dir", dir, "a", "b"}, 2, "usage: byokctl kmip"},
		{[]string{"--dir", dir, "bad/name"}, 2, `"bad/name"`},
		{[]string{"--dir", dir, "--client-owner", "nosuch", "mongod-3"}, 1, "--client-owner nosuch: no such user"},
		{[]string{"--dir", filepath.Join(dir, "missing"), "mongod-3"}, 1, "no such file or directory"},
	} {
		out, err := runKMIP(append([]string{"add-client"}, tc.args...)...)
		if exitCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kmip add-client %q: %v (exit %d), want exit %d and %q\n%s", tc.args, err, exitCode(err), tc.code, tc.want, out)
		}
	}
	if !maps.Equal(before, files(t, dir)) {
		t.Error("refused add-clients changed the files")
	}
}

func TestKMIPUsage(t *testing.T) {
	fakeSystem(t, 1000, nil, false)
	dir := filepath.Join(t.TempDir(), "kmip")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: byokctl kmip init"},
		{[]string{"rotate"}, "unknown kmip command rotate"},
		{[]string{"init", "--dir", dir}, "needs a --client NAME"},
		{[]string{"init", "--dir", dir, "--client", "mongod", "extra"}, "usage: byokctl kmip init"},
		{[]string{"init", "--dir", dir, "--client", "mongo d"}, `--client: client name "mongo d"`},
		{[]string{"init", "--dir", dir, "--client", "mongod", "--host", "localhost:5696"}, `--host: server host "localhost:5696"`},
		{[]string{"init", "--dir", dir, "--nosuchflag"}, "usage: byokctl kmip init"},
	} {
		out, err := runKMIP(tc.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kmip %q: %v (exit %d), want exit 2 and %q\n%s", tc.args, err, exitCode(err), tc.want, out)
		}
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("usage errors made %s", dir)
	}
	for _, l := range []string{"\n  kmip init [--dir D] [--host H]... --client NAME", "\n  kmip add-client [--dir D] [--client-owner USER] NAME"} {
		if !strings.Contains(usage, l) {
			t.Errorf("the usage text has no %q", l)
		}
	}
}

func TestKMIPQuoting(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/byokd/kmip/ca.pem": "/etc/byokd/kmip/ca.pem",
		"127.0.0.1":              "127.0.0.1",
		"::1":                    "'::1'",
		"/a b/it's":              "'/a b/it''s'",
		"on":                     "'on'",
		"db-1.example.com":       "db-1.example.com",
	} {
		if got := yamlString(in); got != want {
			t.Errorf("yamlString(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"/etc/byokd/kmip/ca.pem": `"/etc/byokd/kmip/ca.pem"`,
		`/a"b\c` + "\n":          `"/a\"b\\c\u000A"`,
	} {
		if got := tomlString(in); got != want {
			t.Errorf("tomlString(%q) = %s, want %s", in, got, want)
		}
	}
	for host, want := range map[string]string{"localhost": "127.0.0.1:5696", "::1": "[::1]:5696", "10.0.0.1": "10.0.0.1:5696", "db.example.com": "db.example.com:5696"} {
		if got := listenAddress(host); got != want {
			t.Errorf("listenAddress(%s) = %s, want %s", host, got, want)
		}
	}
}
