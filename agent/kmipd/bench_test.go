// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"testing"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// benchClient speaks TTLV over one TLS connection with as little of its
// own work as it can: the same for the operation measured and its
// baseline.
type benchClient struct {
	conn *tls.Conn
	s    ttlv.Stream
}

func (e *env) clientTLS(b *testing.B) *tls.Config {
	caPEM, err := os.ReadFile(e.pki.CAFile)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(e.certFile, e.keyFile)
	if err != nil {
		b.Fatal(err)
	}
	// Percona's client is OpenSSL with TLS 1.2 or 1.3; Go picks 1.3 here.
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
}

func (e *env) connect(b *testing.B, cfg *tls.Config) *benchClient {
	conn, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := conn.Handshake(); err != nil {
		b.Fatal(err)
	}
	return &benchClient{conn: conn, s: ttlv.NewStream(conn, MaxMessage)}
}

func (c *benchClient) do(b *testing.B, msg []byte) {
	if _, err := c.conn.Write(msg); err != nil {
		b.Fatal(err)
	}
	var resp kmip.ResponseMessage
	if err := c.s.Recv(&resp); err != nil {
		b.Fatal(err)
	}
	if resp.BatchItem[0].ResultStatus != kmip.ResultStatusSuccess {
		b.Fatalf("%s: %s", ttlv.EnumStr(resp.BatchItem[0].Operation), resp.BatchItem[0].ResultMessage)
	}
}

// finish closes the connection as a client that is done does, and waits
// for the server to close its side: the server's share of the
// connection's work is then inside the measured time.
func (c *benchClient) finish(b *testing.B) {
	if err := c.conn.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c.conn); err != nil {
		b.Fatal(err)
	}
	c.conn.Close()
}

// BenchmarkKMIP: a Get of a 256-bit key over an established TLS
// connection against a Discover Versions on the same connection (the
// cheapest request, the baseline); and a whole TLS connection with one Get,
// as Percona's client makes for every operation, against a TLS connection
// with its handshake alone. The memory sealer derives the object's key.
//
//	go test -run '^$' -bench KMIP ./agent/kmipd
func BenchmarkKMIP(b *testing.B) {
	e := start(b)
	cfg := e.clientTLS(b)
	key := make([]byte, 32)
	rand.Read(key)
	c := e.connect(b, cfg)
	defer c.conn.Close()
	reg := kmip.NewRequestMessage(kmip.V1_0, registerReq(bytes.Clone(key), "bench"), &payloads.ActivateRequestPayload{})
	if _, err := c.conn.Write(ttlv.MarshalTTLV(&reg)); err != nil {
		b.Fatal(err)
	}
	var resp kmip.ResponseMessage
	if err := c.s.Recv(&resp); err != nil || resp.BatchItem[0].ResultStatus != kmip.ResultStatusSuccess {
		b.Fatalf("register: %v %+v", err, resp.BatchItem)
	}
	id := resp.BatchItem[0].ResponsePayload.(*payloads.RegisterResponsePayload).UniqueIdentifier
	discover := kmip.NewRequestMessage(kmip.V1_0, &payloads.DiscoverVersionsRequestPayload{})
	get := kmip.NewRequestMessage(kmip.V1_0, &payloads.GetRequestPayload{UniqueIdentifier: id})
	discoverMsg, getMsg := ttlv.MarshalTTLV(&discover), ttlv.MarshalTTLV(&get)

	b.Run("DiscoverVersions", func(b *testing.B) {
		for b.Loop() {
			c.do(b, discoverMsg)
		}
	})
	b.Run("Get", func(b *testing.B) {
		for b.Loop() {
			c.do(b, getMsg)
		}
	})
	b.Run("TLSConnect", func(b *testing.B) {
		for b.Loop() {
			e.connect(b, cfg).finish(b)
		}
	})
	b.Run("ConnectGet", func(b *testing.B) {
		for b.Loop() {
			cc := e.connect(b, cfg)
			cc.do(b, getMsg)
			cc.finish(b)
		}
	})
}
