// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/internal/testenv"
)

// TestTLSReadBuffersAreWiped sends a marker over a real TLS connection,
// reads it, and checks crypto/tls's record buffer held it before the wipe
// and holds nothing of it after. It fails when a Go release renames the
// buffers wipeTLSReadBuffers reaches.
func TestTLSReadBuffersAreWiped(t *testing.T) {
	pki := testenv.NewPKI(t)
	certFile, keyFile := pki.Server(t, "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	marker := []byte("MARKER-" + strings.Repeat("9c3e", 8))
	serve := func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(marker)
		// Hold the connection until the client closes it: a close_notify
		// read after the marker would overwrite the record buffer's start.
		_, _ = io.Copy(io.Discard, c)
	}
	go serve()
	pem, _ := os.ReadFile(pki.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(marker))
		if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, marker) {
			t.Fatalf("read %q: %v", got, err)
		}
		conn.Close()
		if !bytes.Contains(recordBuffer(t, conn), marker) {
			t.Fatalf("TLS %x: the marker is not in crypto/tls's record buffer: the test proves nothing", v)
		}
		if err := wipeTLSReadBuffers(conn); err != nil {
			t.Fatal(err)
		}
		if buf := recordBuffer(t, conn); bytes.Contains(buf, marker[:8]) || len(bytes.Trim(buf, "\x00")) != 0 {
			t.Fatalf("TLS %x: the record buffer still holds data after the wipe", v)
		}
		go serve()
	}
}

// recordBuffer returns the whole backing array of the connection's rawInput.
func recordBuffer(t *testing.T, c *tls.Conn) []byte {
	f := reflect.ValueOf(c).Elem().FieldByName("rawInput").FieldByName("buf")
	if !f.IsValid() {
		t.Fatal("crypto/tls.Conn.rawInput.buf not found")
	}
	n := f.Cap()
	if n == 0 {
		return nil
	}
	return bytes.Clone(unsafe.Slice((*byte)(f.UnsafePointer()), n))
}

func TestReadAnswerFraming(t *testing.T) {
	for _, tc := range []struct {
		name, wire, body string
		status           int
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhelloEXTRA", "hello", 200},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n", "hello", 200},
		{"chunked with trailer", "HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "hello", 400},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nhello", "hello", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, err := secmem.New(1024)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Destroy()
			// One byte at a time: framing must hold across partial reads.
			a, err := readAnswer(iotestOneByte(strings.NewReader(tc.wire)), mem)
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tc.status || string(a.body) != tc.body {
				t.Fatalf("status %d body %q", a.status, a.body)
			}
		})
	}
	for _, bad := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
		"SMTP 220 hello\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
	} {
		mem, _ := secmem.New(1024)
		if _, err := readAnswer(strings.NewReader(bad), mem); err == nil {
			t.Errorf("readAnswer(%q) accepted it", bad)
		}
		mem.Destroy()
	}
	mem, _ := secmem.New(16)
	defer mem.Destroy()
	if _, err := readAnswer(strings.NewReader("HTTP/1.1 200 OK\r\n\r\n"+strings.Repeat("x", 64)), mem); err == nil {
		t.Error("an answer larger than the buffer was accepted")
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func iotestOneByte(r io.Reader) io.Reader { return oneByte{r} }

func TestDecodeSecretAcceptsOnlyA32ByteBase64String(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32] // base64 with '+' and '/'
	b64 := base64.StdEncoding.EncodeToString(key)
	escaped := strings.ReplaceAll(b64, "/", `\/`)
	unicode := strings.Replace(b64, "+", `\u002b`, 1)
	for _, ok := range []string{`"` + b64 + `"`, `"` + escaped + `"`, `"` + unicode + `"`} {
		dek, err := decodeSecret([]byte(ok))
		if err != nil {
			t.Fatalf("%s: %v", ok, err)
		}
		if !bytes.Equal(dek.Bytes(), key) {
			t.Fatalf("%s decoded to another key", ok)
		}
		dek.Destroy()
	}
	for _, bad := range []string{
		b64, `"` + b64[:40] + `"`, `"` + base64.StdEncoding.EncodeToString(key[:16]) + `"`, `"\u00e9` + b64[2:] + `"`,
		`"` + b64[:43] + `\"`, `""`, `"`, `12`, `"` + b64 + `\`,
	} {
		if _, err := decodeSecret([]byte(bad)); err == nil {
			t.Errorf("decodeSecret(%s) accepted it", bad)
		} else if strings.Contains(err.Error(), b64[:8]) {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
}

func TestTopFieldsSplitsAnObjectWithoutCopyingValues(t *testing.T) {
	b := []byte(` {"plaintext":"c2VjcmV0","keyVersion":{"id":"v1","x":[1,{"y":null}]},"n":-1.5e3,"t":true, "s":"a\"b"} `)
	f, err := topFields(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"plaintext": `"c2VjcmV0"`, "keyVersion": `{"id":"v1","x":[1,{"y":null}]}`, "n": "-1.5e3", "t": "true", "s": `"a\"b"`}
	if len(f) != len(want) {
		t.Fatalf("fields %v", f)
	}
	for k, v := range want {
		if string(f[k]) != v {
			t.Fatalf("%s = %s, want %s", k, f[k], v)
		}
	}
	// The value is a slice of b, not a copy.
	p := f["plaintext"]
	if &p[0] != &b[bytes.Index(b, []byte(`"c2V`))] {
		t.Fatal("plaintext was copied")
	}
	for _, bad := range []string{``, `[]`, `{"a":1,"a":2}`, `{"a":1} x`, `{"a":}`, `{"a":1,}`, `{"a" 1}`, `{"a":"x}`,
		`{"a":A}`, `{"a":tru}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":"\x"}`, `{"a":"\u12G4"}`, strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)} {
		if _, err := topFields([]byte(bad)); err == nil {
			t.Errorf("topFields(%q) accepted it", bad)
		}
	}
}

func FuzzTopFields(f *testing.F) {
	f.Add([]byte(`{"plaintext":"c2VjcmV0","keyVersion":{"id":"v1"}}`))
	f.Add([]byte(`{"a":[1,2,{"b":"c\\"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := topFields(b)
		if err != nil {
			return
		}
		// Every value it returns is valid JSON that encoding/json reads.
		for k, v := range fields {
			if !json.Valid(v) {
				t.Fatalf("field %q: %q is not valid JSON", k, v)
			}
		}
	})
}

// TestKeyActionsGoThroughAProxy runs an unwrap through an HTTP CONNECT
// proxy named by HTTPS_PROXY's rules.
func TestKeyActionsGoThroughAProxy(t *testing.T) {
	k := testenv.StartKPTLS(t)
	root, _, _ := provisioned(t, k)
	var tunnels atomic.Int32
	proxy := startConnectProxy(t, &tunnels)
	c := newClient(t, k, root)
	c.proxy = func(*http.Request) (*url.URL, error) { return url.Parse("http://user:pw@" + proxy) }
	w, err := c.WrapNew(tctx(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	w.DEK.Destroy()
	u, err := c.Unwrap(tctx(t), w.Ciphertext, aad)
	if err != nil {
		t.Fatal(err)
	}
	u.DEK.Destroy()
	if n := tunnels.Load(); n != 2 {
		t.Fatalf("%d tunnels through the proxy, want 2 (wrap, unwrap)", n)
	}
	c.proxy = func(*http.Request) (*url.URL, error) { return url.Parse("http://" + proxy + "/refuse") }
	if _, err := c.Unwrap(tctx(t), w.Ciphertext, aad); err == nil || Classify(err).Class != Transient {
		t.Fatalf("a proxy that refuses: %v, want a transient error", err)
	}
}

// startConnectProxy serves HTTP CONNECT on loopback; it refuses a tunnel
// without Proxy-Authorization.
func startConnectProxy(t *testing.T, tunnels *atomic.Int32) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				if req.Header.Get("Proxy-Authorization") == "" {
					io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
					return
				}
				up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer up.Close()
				tunnels.Add(1)
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go io.Copy(up, br)
				io.Copy(c, up)
			}()
		}
	}()
	return l.Addr().String()
}

func TestRequestRefusesLineBreaksInHeaders(t *testing.T) {
	c := &Client{cfg: Config{InstanceID: "x\r\nEvil: 1"}, base: &url.URL{Scheme: "https", Host: "h"}}
	if _, err := c.request("tok", "/p", nil); err == nil {
		t.Fatal("a header value with a line break was sent")
	}
}

// TestRequestLineKeepsTheURLPathEscaped: a Key Protect URL whose path
// holds an escaped space or line break never breaks the request line.
func TestRequestLineKeepsTheURLPathEscaped(t *testing.T) {
	c, err := New(Config{URL: "https://kp.example/a%20b%0d%0aX-Evil:%201", RootKeyID: "k", InstanceID: "i"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := c.request("tok", c.actionPath("unwrap"), nil)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(req), "\r\n")
	if want := "POST /a%20b%0d%0aX-Evil:%201/api/v2/keys/k/actions/unwrap HTTP/1.1"; line != want {
		t.Fatalf("request line %q, want %q", line, want)
	}
	for _, bad := range []string{"https://kp.example/?q=1", "ftp://kp.example", "https://"} {
		if _, err := New(Config{URL: bad}); err == nil {
			t.Errorf("New accepted %q", bad)
		}
	}
}

// FuzzSecretAnswer feeds arbitrary bytes, as a server's answer, through
// everything byokd's own code does with a key action's answer: HTTP
// framing, the JSON split, and the key's decoding. Nothing may panic, and
// a body is always inside the locked buffer.
func FuzzSecretAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 66\r\n\r\n{\"plaintext\":\"" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\",\"a\":[1]}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\r\n{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.error+json\"}}"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		mem, err := secmem.New(4096)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Destroy()
		a, err := readAnswer(bytes.NewReader(wire), mem)
		if err != nil {
			return
		}
		if len(a.body) > 0 {
			whole := mem.Bytes()
			start := uintptr(unsafe.Pointer(&whole[0]))
			p := uintptr(unsafe.Pointer(&a.body[0]))
			if p < start || p+uintptr(len(a.body)) > start+uintptr(len(whole)) {
				t.Fatal("the body is outside the locked buffer")
			}
		}
		_ = newAPIError("unwrap", a.status, a.header, a.body, time.Now())
		fields, err := topFields(a.body)
		if err != nil {
			return
		}
		if raw, ok := fields["plaintext"]; ok {
			if dek, err := decodeSecret(raw); err == nil {
				dek.Destroy()
			}
		}
	})
}
