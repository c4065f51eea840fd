// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/byokd/byokd/agent/kmiptls"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/internal/testenv"
)

// gate is a node whose state the test sets.
type gate struct {
	mu sync.Mutex
	st lock.Status
}

func (g *gate) Status() lock.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st
}

func (g *gate) set(s lock.State, reason string) {
	g.mu.Lock()
	g.st.State, g.st.Reason = s, reason
	g.mu.Unlock()
}

// counts records what the server counts.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) KMIPRequest(op, result string) { c.add("request " + op + " " + result) }
func (c *counts) KMIPRefused(reason string)     { c.add("refused " + reason) }
func (c *counts) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}
func (c *counts) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

type env struct {
	counts   *counts
	addr     string
	dir      string
	pki      *testenv.PKI
	gate     *gate
	sealer   seal.Sealer
	store    *Store
	srv      *Server
	logs     *testenv.SyncBuffer
	certFile string
	keyFile  string
}

func newSealer(t testing.TB, dek []byte) seal.Sealer {
	t.Helper()
	s, err := seal.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Seal(context.Background(), bytes.Clone(dek)); err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs a KMIP server over real TLS on a loopback port, allowing the
// client "mongod".
func start(t testing.TB) *env {
	t.Helper()
	return startWith(t, "mongod")
}

// startWith is start allowing the clients named.
func startWith(t testing.TB, allowed ...string) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), pki: testenv.NewPKI(t), logs: &testenv.SyncBuffer{}, counts: &counts{}}
	e.gate = &gate{st: lock.Status{State: lock.Unlocked, Fingerprint: "00112233aabbccdd"}}
	dek := make([]byte, 32)
	rand.Read(dek)
	e.sealer = newSealer(t, dek)
	cert, key := e.pki.Server(t, "127.0.0.1")
	tlsCfg, err := kmiptls.Load(kmiptls.Files{CAFile: e.pki.CAFile, CertFile: cert, KeyFile: key, Allowed: allowed})
	if err != nil {
		t.Fatal(err)
	}
	e.store, err = OpenStore(filepath.Join(e.dir, "kmip"), "c1", e.sealer, e.gate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.srv = NewServer(Config{Store: e.store, TLS: tlsCfg, Metrics: e.counts, Log: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.certFile, e.keyFile = e.pki.Client(t, "mongod")
	return e
}

func (e *env) dial(t *testing.T, v kmip.ProtocolVersion) *kmipclient.Client {
	t.Helper()
	c, err := kmipclient.Dial(e.addr, kmipclient.WithRootCAFile(e.pki.CAFile),
		kmipclient.WithClientCertFiles(e.certFile, e.keyFile), kmipclient.WithKmipVersions(v))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func req[R kmip.OperationPayload](t *testing.T, c *kmipclient.Client, p kmip.OperationPayload) R {
	t.Helper()
	resp, err := c.Request(context.Background(), p)
	if err != nil {
		t.Fatalf("%s: %v", ttlv.EnumStr(p.Operation()), err)
	}
	r, ok := resp.(R)
	if !ok {
		t.Fatalf("%s: response %T", ttlv.EnumStr(p.Operation()), resp)
	}
	return r
}

// fail runs a request that must fail and returns its batch item.
func fail(t *testing.T, c *kmipclient.Client, p kmip.OperationPayload) kmip.ResponseBatchItem {
	t.Helper()
	res, err := c.Batch(context.Background(), p)
	if err != nil {
		t.Fatalf("%s: %v", ttlv.EnumStr(p.Operation()), err)
	}
	if res[0].ResultStatus != kmip.ResultStatusOperationFailed {
		t.Fatalf("%s: status %s, want Operation Failed", ttlv.EnumStr(p.Operation()), ttlv.EnumStr(res[0].ResultStatus))
	}
	return res[0]
}

func registerReq(key []byte, name string) *payloads.RegisterRequestPayload {
	return &payloads.RegisterRequestPayload{
		ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
			{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: name, NameType: kmip.NameTypeUninterpretedTextString}},
		}},
		Object: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{
			KeyFormatType:          kmip.KeyFormatTypeRaw,
			KeyValue:               &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &key}}},
			CryptographicAlgorithm: kmip.CryptographicAlgorithmAES,
			CryptographicLength:    int32(len(key) * 8),
		}},
	}
}

func getKey(t *testing.T, c *kmipclient.Client, id string) []byte {
	t.Helper()
	r := req[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: id})
	k, err := r.SymmetricKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func state(t *testing.T, c *kmipclient.Client, id string) kmip.State {
	t.Helper()
	r := req[*payloads.GetAttributesResponsePayload](t, c, &payloads.GetAttributesRequestPayload{
		UniqueIdentifier: id, AttributeName: []kmip.AttributeName{kmip.AttributeNameState}})
	if len(r.Attribute) != 1 || r.Attribute[0].AttributeName != kmip.AttributeNameState {
		t.Fatalf("Get Attributes(State): %+v", r.Attribute)
	}
	return r.Attribute[0].AttributeValue.(kmip.State)
}

// Percona's sequence (Register a raw AES-256 key, Activate, Get, Get
// Attributes(State)) in every protocol version, then the lock: Get and
// Encrypt fail naming it, State reads Deactivated; after unlock the same
// key comes back.
func TestPerconaSequenceAndTheLock(t *testing.T) {
	e := start(t)
	for _, v := range Versions {
		t.Run(v.String(), func(t *testing.T) {
			e.gate.set(lock.Unlocked, "")
			c := e.dial(t, v)
			key := make([]byte, 32)
			rand.Read(key)
			id := req[*payloads.RegisterResponsePayload](t, c, registerReq(bytes.Clone(key), "percona-"+v.String())).UniqueIdentifier
			if got := state(t, c, id); got != kmip.StatePreActive {
				t.Fatalf("state after Register = %s", ttlv.EnumStr(got))
			}
			req[*payloads.ActivateResponsePayload](t, c, &payloads.ActivateRequestPayload{UniqueIdentifier: id})
			if got := getKey(t, c, id); !bytes.Equal(got, key) {
				t.Fatal("Get returned another key than registered")
			}
			if got := state(t, c, id); got != kmip.StateActive {
				t.Fatalf("state after Activate = %s", ttlv.EnumStr(got))
			}

			e.gate.set(lock.Locked, "root key disabled")
			bi := fail(t, c, &payloads.GetRequestPayload{UniqueIdentifier: id})
			if !strings.Contains(bi.ResultMessage, "locked") || !strings.Contains(bi.ResultMessage, "root key disabled") {
				t.Fatalf("Get while locked: %q, want the lock named", bi.ResultMessage)
			}
			if got := state(t, c, id); got != kmip.StateDeactivated {
				t.Fatalf("state while locked = %s, want Deactivated", ttlv.EnumStr(got))
			}
			if bi := fail(t, c, &payloads.EncryptRequestPayload{UniqueIdentifier: id, Data: []byte("x")}); ttlv.CompareVersions(v, kmip.V1_2) < 0 {
				if bi.ResultReason != kmip.ResultReasonOperationNotSupported {
					t.Fatalf("Encrypt under %s: %s, want Operation Not Supported", v, ttlv.EnumStr(bi.ResultReason))
				}
			} else if !strings.Contains(bi.ResultMessage, "locked") {
				t.Fatalf("Encrypt while locked: %q", bi.ResultMessage)
			}
			fail(t, c, registerReq(bytes.Clone(key), "while-locked"))
			loc := req[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{Attribute: []kmip.Attribute{
				{AttributeName: kmip.AttributeNameState, AttributeValue: kmip.StateActive}}})
			if len(loc.UniqueIdentifier) != 0 {
				t.Fatalf("Locate(State=Active) while locked found %v", loc.UniqueIdentifier)
			}

			e.gate.set(lock.Unlocked, "")
			if got := getKey(t, c, id); !bytes.Equal(got, key) {
				t.Fatal("after unlock Get returned another key")
			}
			if got := state(t, c, id); got != kmip.StateActive {
				t.Fatalf("state after unlock = %s", ttlv.EnumStr(got))
			}
		})
	}
}

func TestCreateLocateRevokeDestroy(t *testing.T) {
	e := start(t)
	c := e.dial(t, kmip.V1_2)
	cr := req[*payloads.CreateResponsePayload](t, c, &payloads.CreateRequestPayload{
		ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES},
			{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(256)},
			{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
			{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: "mdb-master", NameType: kmip.NameTypeUninterpretedTextString}},
		}},
	})
	id := cr.UniqueIdentifier
	if k := getKey(t, c, id); len(k) != 32 || bytes.Equal(k, make([]byte, 32)) {
		t.Fatalf("created key: %d bytes", len(k))
	}
	loc := req[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{Attribute: []kmip.Attribute{
		{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: "mdb-master", NameType: kmip.NameTypeUninterpretedTextString}}}})
	if len(loc.UniqueIdentifier) != 1 || loc.UniqueIdentifier[0] != id {
		t.Fatalf("Locate(Name) = %v, want [%s]", loc.UniqueIdentifier, id)
	}
	req[*payloads.ActivateResponsePayload](t, c, &payloads.ActivateRequestPayload{UniqueIdentifier: id})
	loc = req[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{Attribute: []kmip.Attribute{
		{AttributeName: kmip.AttributeNameState, AttributeValue: kmip.StateActive}}})
	if len(loc.UniqueIdentifier) != 1 || loc.UniqueIdentifier[0] != id {
		t.Fatalf("Locate(State=Active) = %v, want [%s]", loc.UniqueIdentifier, id)
	}

	al := req[*payloads.GetAttributeListResponsePayload](t, c, &payloads.GetAttributeListRequestPayload{UniqueIdentifier: id})
	for _, want := range []kmip.AttributeName{kmip.AttributeNameState, kmip.AttributeNameCryptographicAlgorithm,
		kmip.AttributeNameCryptographicLength, kmip.AttributeNameCryptographicUsageMask, kmip.AttributeNameName,
		kmip.AttributeNameUniqueIdentifier, kmip.AttributeNameObjectType, kmip.AttributeNameInitialDate,
		kmip.AttributeNameActivationDate, kmip.AttributeNameLastChangeDate} {
		found := false
		for _, n := range al.AttributeName {
			found = found || n == want
		}
		if !found {
			t.Errorf("Get Attribute List lacks %q: %v", want, al.AttributeName)
		}
	}
	all := req[*payloads.GetAttributesResponsePayload](t, c, &payloads.GetAttributesRequestPayload{UniqueIdentifier: id})
	if len(all.Attribute) < len(al.AttributeName) {
		t.Errorf("Get Attributes gave %d attributes, the list names %d", len(all.Attribute), len(al.AttributeName))
	}

	// Encrypt and Decrypt: GCM (the default) and CBC.
	for _, p := range []*kmip.CryptographicParameters{nil, {BlockCipherMode: kmip.BlockCipherModeCBC, PaddingMethod: kmip.PaddingMethodPKCS5}} {
		msg := []byte("the database's data key, 32 byte")
		enc := req[*payloads.EncryptResponsePayload](t, c, &payloads.EncryptRequestPayload{UniqueIdentifier: id, CryptographicParameters: p, Data: bytes.Clone(msg)})
		if bytes.Contains(enc.Data, msg) || len(enc.IVCounterNonce) == 0 {
			t.Fatalf("Encrypt: %x iv %x", enc.Data, enc.IVCounterNonce)
		}
		data := enc.Data
		if p == nil {
			// KMIP 1.2 has no tag field: the tag follows the data.
			data = append(bytes.Clone(enc.Data), enc.AuthenticatedEncryptionTag...)
		}
		dec := req[*payloads.DecryptResponsePayload](t, c, &payloads.DecryptRequestPayload{UniqueIdentifier: id, CryptographicParameters: p, Data: data, IVCounterNonce: enc.IVCounterNonce})
		if !bytes.Equal(dec.Data, msg) {
			t.Fatalf("Decrypt(%v) = %q", p, dec.Data)
		}
		if p != nil {
			continue // CBC has no integrity to check
		}
		data[0] ^= 1
		fail(t, c, &payloads.DecryptRequestPayload{UniqueIdentifier: id, CryptographicParameters: p, Data: data, IVCounterNonce: enc.IVCounterNonce})
	}

	if bi := fail(t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: id}); bi.ResultReason != kmip.ResultReasonPermissionDenied {
		t.Fatalf("Destroy of an Active key: %s", ttlv.EnumStr(bi.ResultReason))
	}
	req[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: id,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeCessationOfOperation}})
	if got := state(t, c, id); got != kmip.StateDeactivated {
		t.Fatalf("state after Revoke = %s", ttlv.EnumStr(got))
	}
	req[*payloads.DestroyResponsePayload](t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: id})
	if bi := fail(t, c, &payloads.GetRequestPayload{UniqueIdentifier: id}); bi.ResultReason != kmip.ResultReasonItemNotFound {
		t.Fatalf("Get after Destroy: %s", ttlv.EnumStr(bi.ResultReason))
	}
	if _, err := os.Stat(filepath.Join(e.dir, "kmip", id+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destroyed object's file: %v", err)
	}

	// An operation byokd does not answer.
	if bi := fail(t, c, &payloads.RekeyRequestPayload{UniqueIdentifier: id}); bi.ResultReason != kmip.ResultReasonOperationNotSupported {
		t.Fatalf("Re-key: %s, want Operation Not Supported", ttlv.EnumStr(bi.ResultReason))
	}
	if got := e.counts.get("request other OperationNotSupported"); got != 1 {
		t.Fatalf("Re-key counted %d times as other/OperationNotSupported: %v", got, e.counts.m)
	}
	if got := e.counts.get("request Get ItemNotFound"); got != 1 {
		t.Fatalf("Get after Destroy counted %d times as ItemNotFound: %v", got, e.counts.m)
	}
	q := req[*payloads.QueryResponsePayload](t, c, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations, kmip.QueryFunctionObjects}})
	if len(q.Operations) != len(operations) || len(q.ObjectType) != 1 {
		t.Fatalf("Query: %v %v", q.Operations, q.ObjectType)
	}
}

// Objects live in 0600 files of a 0700 folder, never with the key in the
// clear, survive a reopen, and do not open under another node's DEK.
func TestStoreAtRest(t *testing.T) {
	e := start(t)
	c := e.dial(t, kmip.V1_0)
	key := make([]byte, 32)
	rand.Read(key)
	id := req[*payloads.RegisterResponsePayload](t, c, registerReq(bytes.Clone(key), "at-rest")).UniqueIdentifier
	dir := filepath.Join(e.dir, "kmip")
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store folder: %v %v", fi.Mode(), err)
	}
	path := filepath.Join(dir, id+".json")
	fi, err = os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("object file: %v %v", fi, err)
	}
	b, _ := os.ReadFile(path)
	for _, enc := range [][]byte{key, []byte(hex.EncodeToString(key)), []byte(base64.StdEncoding.EncodeToString(key)[:40])} {
		if bytes.Contains(b, enc) {
			t.Fatal("the object file holds the key in the clear")
		}
	}

	again, err := OpenStore(dir, "c1", e.sealer, e.gate)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	_, got, err := again.Material(context.Background(), id)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("reopened store: %v", err)
	}

	// Another node's DEK, under the same fingerprint (a stolen state
	// folder on another node): the material does not open.
	other := make([]byte, 32)
	rand.Read(other)
	stolen, err := OpenStore(dir, "c1", newSealer(t, other), e.gate)
	if err != nil {
		t.Fatal(err)
	}
	defer stolen.Close()
	if _, _, err := stolen.Material(context.Background(), id); err == nil {
		t.Fatal("the object opened under another DEK")
	}
	// Under another fingerprint it says so.
	g2 := &gate{st: lock.Status{State: lock.Unlocked, Fingerprint: "ffffffffffffffff"}}
	s3, err := OpenStore(dir, "c1", e.sealer, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if _, _, err := s3.Material(context.Background(), id); err == nil || !strings.Contains(err.Error(), "sealed under data key") {
		t.Fatalf("another fingerprint: %v", err)
	}

	// A damaged file fails the open, naming it.
	if err := os.WriteFile(filepath.Join(dir, "00000000-0000-4000-8000-000000000000.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir, "c1", e.sealer, e.gate); err == nil || !strings.Contains(err.Error(), "00000000-0000-4000-8000-000000000000.json") {
		t.Fatalf("damaged file: %v", err)
	}
}

// A client certificate not on the allow-list, one from another CA, plain
// TCP and garbage bytes are refused and logged; the server keeps serving.
func TestRefusals(t *testing.T) {
	e := start(t)
	caPEM, _ := os.ReadFile(e.pki.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	handshake := func(certFile, keyFile string) error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports the server's refusal at the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Write(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_0, &payloads.DiscoverVersionsRequestPayload{})))
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		return err
	}
	stranger, strangerKey := e.pki.Client(t, "stranger")
	if err := handshake(stranger, strangerKey); err == nil {
		t.Fatal("a client certificate not on the allow-list was served")
	}
	otherCA := testenv.NewPKI(t)
	forged, forgedKey := otherCA.Client(t, "mongod")
	if err := handshake(forged, forgedKey); err == nil {
		t.Fatal("a client certificate from another CA was served")
	}
	if err := handshake(e.certFile, e.keyFile); err != nil {
		t.Fatalf("the allowed client: %v", err)
	}

	plain, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	plain.Write(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_0, &payloads.DiscoverVersionsRequestPayload{})))
	plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(plain)
	plain.Close()
	if bytes.Contains(got, []byte{0x42, 0x00, 0x7b}) {
		t.Fatal("a plain TCP client got a KMIP response")
	}

	// Garbage over an allowed TLS connection: an Invalid Message answer,
	// then the connection closes.
	cert, _ := tls.LoadX509KeyPair(e.certFile, e.keyFile)
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	var resp kmip.ResponseMessage
	s := ttlv.NewStream(conn, MaxMessage)
	if err := s.Recv(&resp); err != nil {
		t.Fatalf("no answer to garbage: %v", err)
	}
	if len(resp.BatchItem) != 1 || resp.BatchItem[0].ResultReason != kmip.ResultReasonInvalidMessage {
		t.Fatalf("answer to garbage: %+v", resp.BatchItem)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection stayed open after garbage")
	}

	// Still serving.
	c := e.dial(t, kmip.V1_4)
	req[*payloads.QueryResponsePayload](t, c, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}})

	logs := e.logs.String()
	for _, want := range []string{`not on kmip.allowed_clients`, `first record does not look like a TLS handshake`, `not a KMIP request message`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if n := strings.Count(logs, `"action":"kmip-refuse"`); n < 4 {
		t.Errorf("%d refusals logged, want 4 or more:\n%s", n, logs)
	}
	for k, want := range map[string]int{"refused client-not-allowed": 1, "refused tls": 2, "refused malformed": 1, "request Query ok": 1} {
		if got := e.counts.get(k); got != want {
			t.Errorf("metric %q = %d, want %d (%v)", k, got, want, e.counts.m)
		}
	}
}

// The record buffer byokd wipes is where crypto/tls keeps it: a Go whose
// crypto/tls changed fails here rather than leaving requests in memory.
func TestTLSRecordBufferIsFound(t *testing.T) {
	if !tlsFields.ok {
		t.Fatal("crypto/tls.Conn has no rawInput bytes.Buffer and input bytes.Reader: wipeTLSInput wipes nothing")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	e := start(t)
	srv := tls.Server(a, &tls.Config{Certificates: e.srv.cfg.TLS.Certificates})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	secret := []byte("a master key in a record, 32 b!!")
	go func() {
		cli.Write(secret)
	}()
	got := make([]byte, len(secret))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatal(err)
	}
	// The whole array of the record buffer, from its start.
	array := func() []byte {
		raw := *rawInput(srv) // a copy of the buffer's header, same array
		raw.Reset()
		all := raw.Bytes()
		return all[:cap(all)]
	}
	if !bytes.Contains(array(), secret) {
		t.Fatal("the record buffer does not hold the decrypted record: the field is not what byokd expects")
	}
	if !tlsInputIdle(srv) {
		t.Fatal("input not idle after the whole record was read")
	}
	wipeTLSInput(srv)
	if bytes.Contains(array(), secret) {
		t.Fatal("the record buffer still holds the record after wipeTLSInput")
	}
}

func (e *env) dialAs(t *testing.T, cn string) *kmipclient.Client {
	t.Helper()
	cert, key := e.pki.Client(t, cn)
	c, err := kmipclient.Dial(e.addr, kmipclient.WithRootCAFile(e.pki.CAFile),
		kmipclient.WithClientCertFiles(cert, key), kmipclient.WithKmipVersions(kmip.V1_4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Objects belong to the client that made them: another allowed client
// neither finds, reads, revokes nor destroys them.
func TestObjectsBelongToTheirClient(t *testing.T) {
	e := startWith(t, "mongod", "pbm")
	mongod, pbm := e.dial(t, kmip.V1_4), e.dialAs(t, "pbm")
	key := make([]byte, 32)
	rand.Read(key)
	id := req[*payloads.RegisterResponsePayload](t, mongod, registerReq(bytes.Clone(key), "master")).UniqueIdentifier
	for _, p := range []kmip.OperationPayload{
		&payloads.GetRequestPayload{UniqueIdentifier: id},
		&payloads.GetAttributesRequestPayload{UniqueIdentifier: id},
		&payloads.GetAttributeListRequestPayload{UniqueIdentifier: id},
		&payloads.ActivateRequestPayload{UniqueIdentifier: id},
		&payloads.RevokeRequestPayload{UniqueIdentifier: id},
		&payloads.DestroyRequestPayload{UniqueIdentifier: id},
		&payloads.EncryptRequestPayload{UniqueIdentifier: id, Data: []byte("x")},
	} {
		if bi := fail(t, pbm, p); bi.ResultReason != kmip.ResultReasonItemNotFound {
			t.Errorf("%s of another client's object: %s, want Item Not Found", ttlv.EnumStr(p.Operation()), ttlv.EnumStr(bi.ResultReason))
		}
	}
	loc := req[*payloads.LocateResponsePayload](t, pbm, &payloads.LocateRequestPayload{})
	if len(loc.UniqueIdentifier) != 0 {
		t.Fatalf("another client's Locate found %v", loc.UniqueIdentifier)
	}
	if got := getKey(t, mongod, id); !bytes.Equal(got, key) {
		t.Fatal("the owner lost its key")
	}
}

// Register takes the Transparent Symmetric Key format too, and Get gives
// either format back.
func TestTransparentSymmetricKey(t *testing.T) {
	e := start(t)
	c := e.dial(t, kmip.V1_2)
	key := make([]byte, 16)
	rand.Read(key)
	r := registerReq(bytes.Clone(key), "tsk")
	kb := &r.Object.(*kmip.SymmetricKey).KeyBlock
	kb.KeyFormatType = kmip.KeyFormatTypeTransparentSymmetricKey
	kb.KeyValue.Plain.KeyMaterial = kmip.KeyMaterial{TransparentSymmetricKey: &kmip.TransparentSymmetricKey{Key: bytes.Clone(key)}}
	id := req[*payloads.RegisterResponsePayload](t, c, r).UniqueIdentifier
	if got := getKey(t, c, id); !bytes.Equal(got, key) {
		t.Fatal("Get (Raw) of a key registered as Transparent Symmetric Key: another key")
	}
	g := req[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: id, KeyFormatType: kmip.KeyFormatTypeTransparentSymmetricKey})
	m := g.Object.(*kmip.SymmetricKey).KeyBlock.KeyValue.Plain.KeyMaterial
	if m.TransparentSymmetricKey == nil || !bytes.Equal(m.TransparentSymmetricKey.Key, key) {
		t.Fatal("Get (Transparent Symmetric Key): another key")
	}
}

// What one client can ask of byokd is bounded: items per batch, objects
// kept, identifiers per Locate.
func TestLimits(t *testing.T) {
	e := start(t)
	c := e.dial(t, kmip.V1_4)
	items := make([]kmip.OperationPayload, MaxBatchItems+1)
	for i := range items {
		items[i] = &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}}
	}
	res, err := c.Batch(context.Background(), items...)
	if err == nil && (len(res) != 1 || res[0].ResultReason != kmip.ResultReasonInvalidMessage) {
		t.Fatalf("a batch of %d items: %+v", len(items), res)
	}
	// The server closed that connection; on a new one a batch at the
	// limit goes.
	c = e.dial(t, kmip.V1_4)
	if _, err := c.Batch(context.Background(), items[:MaxBatchItems]...); err != nil {
		t.Fatalf("a batch of %d items: %v", MaxBatchItems, err)
	}

	e.store.maxObjects = 3
	prev := maxLocated
	maxLocated = 2
	t.Cleanup(func() { maxLocated = prev })
	for range 3 {
		req[*payloads.CreateResponsePayload](t, c, &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey})
	}
	if bi := fail(t, c, &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey}); !strings.Contains(bi.ResultMessage, "at most 3 KMIP objects") {
		t.Fatalf("a Create over the limit: %q", bi.ResultMessage)
	}
	loc := req[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{})
	if len(loc.UniqueIdentifier) != 2 || loc.LocatedItems == nil || *loc.LocatedItems != 3 {
		t.Fatalf("Locate over the limit: %d ids, located %v", len(loc.UniqueIdentifier), loc.LocatedItems)
	}
}

// Connections in their TLS handshake cannot keep the database out: when
// MaxHandshakes idle connections hold the port, the oldest goes for a new
// one, and the allowed client is served; the refusals are logged at most
// refusalLogsPerSecond at a time and all counted.
func TestIdleConnectionsDoNotLockTheClientOut(t *testing.T) {
	e := start(t)
	var idle []net.Conn
	for range MaxHandshakes + MaxConns {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	c := e.dial(t, kmip.V1_4)
	req[*payloads.QueryResponsePayload](t, c, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}})
	// Evicted at accept, not when their handshake times out: within half
	// of HandshakeTimeout, the ones over MaxHandshakes are gone.
	deadline := time.Now().Add(HandshakeTimeout / 2)
	for e.counts.get("refused tls") < MaxConns && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.counts.get("refused tls"); n < MaxConns {
		t.Fatalf("%d handshakes evicted within %v, want at least %d", n, HandshakeTimeout/2, MaxConns)
	}
	if n := strings.Count(e.logs.String(), `"msg":"kmip connection refused"`); n > refusalLogsPerSecond*2 {
		t.Fatalf("%d refusals logged one by one, want at most %d a second", n, refusalLogsPerSecond)
	}
}

// An Active object sealed under another data key than the one the node
// serves (after accept-key or forget-key) is not Active to its client.
func TestStateUnderAnotherDataKey(t *testing.T) {
	e := start(t)
	c := e.dial(t, kmip.V1_0)
	id := req[*payloads.RegisterResponsePayload](t, c, registerReq(make([]byte, 32), "old")).UniqueIdentifier
	req[*payloads.ActivateResponsePayload](t, c, &payloads.ActivateRequestPayload{UniqueIdentifier: id})
	e.gate.mu.Lock()
	e.gate.st.Fingerprint = "ffffeeeeddddcccc"
	e.gate.mu.Unlock()
	if got := state(t, c, id); got != kmip.StateDeactivated {
		t.Fatalf("state under another data key = %s, want Deactivated", ttlv.EnumStr(got))
	}
	if bi := fail(t, c, &payloads.GetRequestPayload{UniqueIdentifier: id}); !strings.Contains(bi.ResultMessage, "internal error") && !strings.Contains(bi.ResultMessage, "sealed under") {
		t.Fatalf("Get under another data key: %q", bi.ResultMessage)
	}
}

// A temporary file a crashed writer left goes at the next open.
func TestOpenRemovesTemporaryFiles(t *testing.T) {
	e := start(t)
	dir := filepath.Join(e.dir, "kmip")
	stray := filepath.Join(dir, ".0f1e2d3c-aaaa-4bbb-8ccc-000000000001.json.tmp-0123abcd")
	if err := os.WriteFile(stray, []byte("sealed"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(dir, "c1", e.sealer, e.gate)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary file is still there: %v", err)
	}
}

// resealing is a sealer whose protected key became void (cpacf after a
// re-IPL): every Derive says ErrReseal.
type resealing struct{}

func (resealing) Derive(context.Context, []byte, []byte) error { return seal.ErrReseal }

// A void sealed key makes the store ask the key manager to seal the DEK
// again and tell the client to retry, instead of failing for good.
func TestResealIsAskedFor(t *testing.T) {
	g := &gate{st: lock.Status{State: lock.Unlocked, Fingerprint: "00112233aabbccdd"}}
	s, err := OpenStore(filepath.Join(t.TempDir(), "kmip"), "c1", resealing{}, g)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	asked := 0
	s.Reseal = func() { asked++ }
	_, err = s.Add(context.Background(), Object{Algorithm: "AES", Length: 256}, make([]byte, 32))
	if !errors.Is(err, ErrRetry) || asked != 1 {
		t.Fatalf("Add with a void sealed key: %v, reseal asked %d times", err, asked)
	}
	if msg := kerr(err).Error(); !strings.Contains(msg, "retry") {
		t.Fatalf("the client is told %q, want a retry", msg)
	}
}
