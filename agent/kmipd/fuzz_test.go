// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/byokd/byokd/agent/lock"
)

// panicCatcher counts the library executor's "handler panicked" records:
// the executor recovers a handler's panic, which would otherwise hide it.
type panicCatcher struct{ n *atomic.Int64 }

func (p panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (p panicCatcher) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		p.n.Add(1)
	}
	return nil
}
func (p panicCatcher) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p panicCatcher) WithGroup(string) slog.Handler      { return p }

// FuzzRequest feeds arbitrary bytes to the request reader and every
// decoded request to the operations, on a real store: nothing may panic
// (in the decoder, the executor or a handler), every request gets a
// response that encodes, and a refused header is refused without reading
// on.
func FuzzRequest(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	seeds := []kmip.OperationPayload{
		&payloads.DiscoverVersionsRequestPayload{},
		&payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}},
		registerReq(key, "seed"),
		&payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey},
		&payloads.ActivateRequestPayload{},
		&payloads.GetRequestPayload{},
		&payloads.GetAttributesRequestPayload{AttributeName: []kmip.AttributeName{kmip.AttributeNameState}},
		&payloads.GetAttributeListRequestPayload{},
		&payloads.LocateRequestPayload{Attribute: []kmip.Attribute{{AttributeName: kmip.AttributeNameState, AttributeValue: kmip.StateActive}}},
		&payloads.RevokeRequestPayload{},
		&payloads.DestroyRequestPayload{},
		&payloads.EncryptRequestPayload{Data: []byte("x")},
		&payloads.DecryptRequestPayload{Data: bytes.Repeat([]byte{1}, 32), IVCounterNonce: make([]byte, 12)},
	}
	for _, v := range Versions {
		for _, p := range seeds {
			m := kmip.NewRequestMessage(v, p)
			f.Add(ttlv.MarshalTTLV(&m))
		}
		// Register then Activate in one batch, through the id placeholder.
		m := kmip.NewRequestMessage(v, registerReq(key, "batch"), &payloads.ActivateRequestPayload{}, &payloads.GetRequestPayload{})
		f.Add(ttlv.MarshalTTLV(&m))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x08, 0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x00})

	var panics atomic.Int64
	prev := slog.Default()
	slog.SetDefault(slog.New(panicCatcher{&panics}))
	f.Cleanup(func() { slog.SetDefault(prev) })

	g := &gate{st: lock.Status{State: lock.Unlocked, Fingerprint: "00112233aabbccdd"}}
	sealer := newSealer(f, bytes.Repeat([]byte{9}, 32))
	store, err := OpenStore(filepath.Join(f.TempDir(), "kmip"), "c1", sealer, g)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	srv := NewServer(Config{Store: store})

	f.Fuzz(func(t *testing.T, data []byte) {
		before := panics.Load()
		r := bytes.NewReader(data)
		req, err := srv.readRequest(r, func() {})
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp := srv.exec.HandleRequest(ctx, req)
		if resp == nil {
			t.Fatal("no response")
		}
		out := ttlv.MarshalTTLV(resp)
		var back kmip.ResponseMessage
		if err := ttlv.UnmarshalTTLV(out, &back); err != nil {
			t.Fatalf("the response does not decode: %v", err)
		}
		wipeRequest(req)
		wipeResponse(resp)
		if panics.Load() != before {
			t.Fatal("a handler panicked")
		}
	})
}
