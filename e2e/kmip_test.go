// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// pykmip runs PyKMIP's ProxyKmipClient (Debian's python3-pykmip), through
// e2e/testdata/pykmip_driver.py, over one TLS connection with a client
// certificate.
type pykmip struct {
	addr          string
	ca, cert, key string
	version       string // KMIP version the client speaks
}

// result is one operation's JSON line from the driver.
type result struct {
	Op      string          `json:"op"`
	OK      bool            `json:"ok"`
	Result  json.RawMessage `json:"result"`
	Reason  string          `json:"reason"`
	Message string          `json:"message"`
	Error   string          `json:"error"`
}

func (r result) str(t *testing.T) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(r.Result, &s); err != nil {
		t.Fatalf("%s: result %s: %v", r.Op, r.Result, err)
	}
	return s
}

// run runs ops on one connection and returns each op's result and the
// driver's exit code.
func (p pykmip) run(t *testing.T, ops ...string) ([]result, int) {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.addr)
	args := []string{filepath.Join("testdata", "pykmip_driver.py"), "--kmip-version", p.version}
	cmd := exec.Command("/usr/bin/python3", append(args, ops...)...)
	cmd.Env = append(os.Environ(), "KMIP_HOST="+host, "KMIP_PORT="+port, "KMIP_CA="+p.ca,
		"KMIP_CLIENT_CERT="+p.cert, "KMIP_CLIENT_KEY="+p.key, "_PYKMIP_DRIVER_REEXEC=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pykmip driver: %v\n%s", err, stderr.String())
	}
	var res []result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("pykmip driver printed %q: %v\n%s", sc.Text(), err, stderr.String())
		}
		res = append(res, r)
	}
	return res, code
}

// one runs ops that must all succeed and returns their results.
func (p pykmip) ok(t *testing.T, ops ...string) []result {
	t.Helper()
	res, code := p.run(t, ops...)
	if code != 0 {
		t.Fatalf("pykmip %v: exit %d: %+v", ops, code, res)
	}
	return res
}

// kmipSetup makes the node's KMIP files with byokctl kmip init, as an
// operator does, and returns their folder.
func kmipSetup(t *testing.T, dir string) string {
	t.Helper()
	kdir := filepath.Join(dir, "kmip")
	out, err := exec.Command(filepath.Join(testenv.Binaries(t), "byokctl"), "kmip", "init", "--dir", kdir,
		"--host", "127.0.0.1", "--client", "mongod", "--server-owner", "root").CombinedOutput()
	if err != nil {
		t.Fatalf("byokctl kmip init: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(testenv.Binaries(t), "byokctl"), "kmip", "add-client", "--dir", kdir, "stranger").CombinedOutput()
	if err != nil {
		t.Fatalf("byokctl kmip add-client: %v\n%s", err, out)
	}
	return kdir
}

func kmipConfig(kdir string) func(*config.Config) {
	return func(c *config.Config) {
		c.KMIP = config.KMIP{Enabled: true, Listen: "127.0.0.1:0", CAFile: filepath.Join(kdir, "ca.pem"),
			CertFile: filepath.Join(kdir, "server.pem"), KeyFile: filepath.Join(kdir, "server.key"),
			AllowedClients: []string{"mongod"}}
	}
}

// kmipNode is byokd with [kmip] on, its KMIP files made by byokctl kmip
// init, against a Key Protect emulator, unlocked.
type kmipNode struct {
	k         *testenv.KP
	root, dir string
	kdir      string
	b         *testenv.Byokd
	py        pykmip // the allowed client "mongod", KMIP 1.2
}

func startKMIPNode(t *testing.T) *kmipNode {
	t.Helper()
	n := &kmipNode{k: testenv.StartKP(t), dir: testenv.Dir(t)}
	n.root = n.k.RootKey(t, "kmip-root")
	n.kdir = kmipSetup(t, n.dir)
	n.b = testenv.StartByokd(t, n.k, testenv.Options{RootKeyID: n.root, Provision: true, Dir: n.dir, Config: kmipConfig(n.kdir)})
	n.b.WaitState(t, n.b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	n.py = pykmip{addr: kmipAddr(t, n.b), ca: filepath.Join(n.kdir, "ca.pem"), cert: filepath.Join(n.kdir, "client-mongod.pem"),
		key: filepath.Join(n.kdir, "client-mongod.key"), version: "1.2"}
	return n
}

var kmipListening = regexp.MustCompile(`"msg":"kmip server listening","addr":"([^"]+)"`)

// kmipAddr is the address of the last KMIP listener byokd logged.
func kmipAddr(t *testing.T, b *testenv.Byokd) string {
	t.Helper()
	m := kmipListening.FindAllStringSubmatch(b.Logs(), -1)
	if m == nil {
		t.Fatalf("no KMIP address in the logs:\n%s", b.Logs())
	}
	return m[len(m)-1][1]
}

// TestKMIPWithPyKMIP: PyKMIP's client, through real TLS with client
// certificates, runs Percona's sequence (Register a raw AES-256 key,
// Activate, Get, Get Attributes(State), each on its own connection as
// Percona's client connects per operation) and Create, Locate, Revoke,
// Destroy, Encrypt and Decrypt; then the root key is disabled: Get fails
// naming the lock and State is not Active within the poll interval + 1 s;
// enabled: the same key, bit for bit; byokd restarted: still there.
func TestKMIPWithPyKMIP(t *testing.T) {
	n := startKMIPNode(t)
	k, root, dir, kdir, b := n.k, n.root, n.dir, n.kdir, n.b
	c := b.Client()
	py := n.py
	py.version = "1.0"

	// Percona's sequence, one connection per operation, KMIP 1.0.
	master := make([]byte, 32)
	rand.Read(master)
	id := py.ok(t, "register", hex.EncodeToString(master), "percona-master")[0].str(t)
	if got := py.ok(t, "state", id)[0].str(t); got != "PRE_ACTIVE" {
		t.Fatalf("state after Register = %s", got)
	}
	py.ok(t, "activate", id)
	if got := py.ok(t, "get", id)[0].str(t); got != hex.EncodeToString(master) {
		t.Fatal("Get returned another key than registered")
	}
	if got := py.ok(t, "state", id)[0].str(t); got != "ACTIVE" {
		t.Fatalf("state after Activate = %s", got)
	}

	// The rest, KMIP 1.2 and 1.4, several operations per connection.
	v12 := py
	v12.version = "1.2"
	res := v12.ok(t, "create", "mdb-master", "locate-name", "mdb-master", "attrlist", "@", "attrs", "@")
	id2 := res[0].str(t)
	var located []string
	json.Unmarshal(res[1].Result, &located)
	if len(located) != 1 || located[0] != id2 {
		t.Fatalf("Locate(Name) = %v, want [%s]", located, id2)
	}
	var names []string
	json.Unmarshal(res[2].Result, &names)
	for _, want := range []string{"State", "Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask",
		"Name", "Unique Identifier", "Object Type", "Initial Date", "Last Change Date"} {
		if !strings.Contains(strings.Join(names, "|"), want) {
			t.Errorf("Get Attribute List lacks %q: %v", want, names)
		}
	}
	res = v12.ok(t, "activate", id2, "locate-state", "ACTIVE", "encrypt", id2, "00112233445566778899aabbccddeeff00")
	json.Unmarshal(res[1].Result, &located)
	if strings.Join(located, ",") != id+","+id2 && strings.Join(located, ",") != id2+","+id {
		t.Fatalf("Locate(State=Active) = %v, want %s and %s", located, id, id2)
	}
	var enc struct{ Data, IV string }
	if err := json.Unmarshal(res[2].Result, &enc); err != nil {
		t.Fatal(err)
	}
	if got := v12.ok(t, "decrypt", id2, enc.Data, enc.IV)[0]; !strings.Contains(string(got.Result), "00112233445566778899aabbccddeeff00") {
		t.Fatalf("Decrypt (CBC) = %s", got.Result)
	}
	v14 := py
	v14.version = "1.4"
	res = v14.ok(t, "encrypt-gcm", id2, "feedfacecafe", "aa")
	var gcm struct{ Data, IV, Tag string }
	if err := json.Unmarshal(res[0].Result, &gcm); err != nil {
		t.Fatal(err)
	}
	if got := v14.ok(t, "decrypt-gcm", id2, gcm.Data, gcm.IV, gcm.Tag, "aa")[0]; !strings.Contains(string(got.Result), "feedfacecafe") {
		t.Fatalf("Decrypt (GCM) = %s", got.Result)
	}
	if r, _ := v14.run(t, "decrypt-gcm", id2, gcm.Data, gcm.IV, gcm.Tag, "bb"); len(r) != 1 || r[0].OK || r[0].Reason != "CRYPTOGRAPHIC_FAILURE" {
		t.Fatalf("Decrypt (GCM) with other additional data: %+v", r)
	}
	if r, _ := v12.run(t, "destroy", id2); len(r) != 1 || r[0].OK || r[0].Reason != "PERMISSION_DENIED" {
		t.Fatalf("Destroy of an Active key: %+v", r)
	}
	v12.ok(t, "revoke", id2)
	if got := v12.ok(t, "state", id2)[0].str(t); got != "DEACTIVATED" {
		t.Fatalf("state after Revoke = %s", got)
	}
	v12.ok(t, "destroy", id2)
	if r, _ := v12.run(t, "get", id2); len(r) != 1 || r[0].OK || r[0].Reason != "ITEM_NOT_FOUND" {
		t.Fatalf("Get after Destroy: %+v", r)
	}

	// Disable the root key: within the poll interval (1 s) + 1 s, Get
	// fails naming the lock and State is no longer Active.
	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	// Every PyKMIP call that starts later than that must see the lock;
	// one that starts earlier may.
	disabled := time.Now()
	for {
		start := time.Since(disabled)
		r, _ := py.run(t, "get", id, "state", id)
		if len(r) == 2 && !r[0].OK && r[1].OK && r[1].str(t) != "ACTIVE" {
			if !strings.Contains(r[0].Message, "locked") {
				t.Fatalf("Get while locked: %+v, want the lock named", r[0])
			}
			t.Logf("PyKMIP saw the lock in a call started %v after the disable (state %s, %q)", start.Round(time.Millisecond), r[1].str(t), r[0].Message)
			break
		}
		if start > 2*time.Second {
			t.Fatalf("a PyKMIP call started %v after the disable (poll interval 1 s) was still served: %+v", start, r)
		}
	}

	// Enable: the same key, bit for bit, and Active again.
	k.Do(t, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	res = py.ok(t, "get", id, "state", id)
	if res[0].str(t) != hex.EncodeToString(master) || res[1].str(t) != "ACTIVE" {
		t.Fatalf("after enable: %+v", res)
	}

	// Restart byokd: still there.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	b2 := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: dir, Config: kmipConfig(kdir)})
	b2.WaitState(t, b2.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	py.addr = kmipAddr(t, b2)
	res = py.ok(t, "get", id, "state", id)
	if res[0].str(t) != hex.EncodeToString(master) || res[1].str(t) != "ACTIVE" {
		t.Fatalf("after restart: %+v", res)
	}

	// Nothing of the key in the clear under the state folder.
	filepath.WalkDir(filepath.Join(dir, "state"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, master) || bytes.Contains(bytes.ToLower(data), []byte(hex.EncodeToString(master))) {
			t.Errorf("%s holds the registered key in the clear", path)
		}
		return nil
	})
}

// TestKMIPRefusals: a client certificate of the node's CA that is not on
// the allow-list, a plain TCP client and garbage bytes are refused and
// logged, and the server keeps serving the allowed client.
func TestKMIPRefusals(t *testing.T) {
	n := startKMIPNode(t)
	kdir, b, py, addr := n.kdir, n.b, n.py, n.py.addr

	stranger := py
	stranger.cert, stranger.key = filepath.Join(kdir, "client-stranger.pem"), filepath.Join(kdir, "client-stranger.key")
	// Under TLS 1.3 the refusal shows at connect or at the first
	// operation; either way nothing is served.
	if r, code := stranger.run(t, "create", "x"); code == 0 {
		t.Fatalf("a client not on the allow-list was served: %+v", r)
	}

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	plain.Write([]byte{0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x00})
	plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(plain)
	plain.Close()
	if bytes.Contains(got, []byte{0x42, 0x00, 0x7b}) {
		t.Fatal("a plain TCP client got a KMIP response")
	}

	caPEM, _ := os.ReadFile(py.ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(py.cert, py.key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	garbage := make([]byte, 512)
	rand.Read(garbage)
	conn.Write(garbage)
	answer, _ := io.ReadAll(conn)
	conn.Close()
	// An Invalid Message (0x04) result, then the server closed.
	if !bytes.Contains(answer, []byte{0x42, 0x00, 0x7e, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04}) {
		t.Fatalf("answer to garbage: %x", answer)
	}

	// Still serving the allowed client.
	py.ok(t, "create", "after-refusals", "state", "@")

	// byokctl check-config loads the KMIP files as byokd does.
	ctl := filepath.Join(testenv.Binaries(t), "byokctl")
	if out, err := exec.Command(ctl, "check-config", b.Config).CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok") {
		t.Fatalf("check-config with [kmip]: %v\n%s", err, out)
	}
	if err := os.Chmod(filepath.Join(kdir, "server.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ctl, "check-config", b.Config).CombinedOutput(); err == nil || !strings.Contains(string(out), "server.key has mode 0644") {
		t.Fatalf("check-config with a server key others read: %v\n%s", err, out)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		logs := b.Logs()
		n := strings.Count(logs, `"action":"kmip-refuse"`)
		if n >= 3 && strings.Contains(logs, `not on kmip.allowed_clients`) && strings.Contains(logs, `TLS handshake`) &&
			strings.Contains(logs, `not a KMIP request message`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refusals logged; want the allow-list, the plain client and the garbage:\n%s", n, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
