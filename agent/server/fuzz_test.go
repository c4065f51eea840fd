// SPDX-License-Identifier: Apache-2.0

package server

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/crypto/seal"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// fuzzServer is an unlocked server with both modes on, over a memory sealer.
func fuzzServer(f *testing.F) *Server {
	f.Helper()
	sealer, err := seal.NewMemory()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sealer.Close() })
	if err := sealer.Seal(context.Background(), bytes.Repeat([]byte{0x42}, 32)); err != nil {
		f.Fatal(err)
	}
	m := lock.New(lock.Status{}, lock.Hooks{Wipe: sealer.Wipe})
	m.Fire(context.Background(), lock.EvUnlocked, lock.Why{})
	s := New(Config{ClusterID: "fuzz", Keys: sealer, Machine: m, Release: true, Strict: true})
	f.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

// FuzzRequests feeds arbitrary wire bytes, decoded as gRPC would, to
// GetDataKey, Encrypt and Decrypt of an unlocked server: nothing panics, a
// refusal is INVALID_ARGUMENT and nothing else, and whatever Encrypt seals
// Decrypt opens back to the same plaintext.
func FuzzRequests(f *testing.F) {
	s := fuzzServer(f)
	ctx := context.Background()
	add := func(kind byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(kind, b)
	}
	add(0, &pb.GetDataKeyRequest{KeyId: "table:orders"})
	add(0, &pb.GetDataKeyRequest{KeyId: "tab\x00le"})
	add(1, &pb.EncryptRequest{KeyId: "table:orders", Plaintext: []byte("row"), Aad: []byte("page 7")})
	add(1, &pb.EncryptRequest{KeyId: "", Plaintext: nil})
	enc, err := s.Encrypt(ctx, &pb.EncryptRequest{KeyId: "table:orders", Plaintext: []byte("row"), Aad: []byte("page 7")})
	if err != nil {
		f.Fatal(err)
	}
	add(2, &pb.DecryptRequest{KeyId: "table:orders", Ciphertext: enc.GetCiphertext(), Aad: []byte("page 7")})
	add(2, &pb.DecryptRequest{KeyId: "table:orders", Ciphertext: enc.GetCiphertext()[:10]})
	f.Fuzz(func(t *testing.T, kind byte, wire []byte) {
		var err error
		switch kind % 3 {
		case 0:
			req := &pb.GetDataKeyRequest{}
			if proto.Unmarshal(wire, req) != nil {
				return // gRPC refuses it before byokd sees it
			}
			var resp *pb.GetDataKeyResponse
			if resp, err = s.GetDataKey(ctx, req); err == nil && len(resp.GetKey()) != 32 {
				t.Fatalf("data key of %d bytes", len(resp.GetKey()))
			}
		case 1:
			req := &pb.EncryptRequest{}
			if proto.Unmarshal(wire, req) != nil {
				return
			}
			var resp *pb.EncryptResponse
			if resp, err = s.Encrypt(ctx, req); err == nil {
				back, derr := s.Decrypt(ctx, &pb.DecryptRequest{KeyId: req.GetKeyId(), Ciphertext: resp.GetCiphertext(), Aad: req.GetAad()})
				if derr != nil || !bytes.Equal(back.GetPlaintext(), req.GetPlaintext()) {
					t.Fatalf("an encrypted block does not decrypt back: %v", derr)
				}
			}
		case 2:
			req := &pb.DecryptRequest{}
			if proto.Unmarshal(wire, req) != nil {
				return
			}
			_, err = s.Decrypt(ctx, req)
		}
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("refused with %v, want INVALID_ARGUMENT: %v", status.Code(err), err)
		}
	})
}
