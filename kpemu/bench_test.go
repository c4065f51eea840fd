// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"context"
	"io"
	"net/http"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
)

// Run with: go test -run '^$' -bench . -cpu 1 ./kpemu
// BenchmarkLoopbackEmptyCall is the baseline: an HTTP round trip on the same
// loopback connection pool that answers without any work.

func benchEnv(b *testing.B) (*Instance, *http.Transport) {
	b.Helper()
	in, err := Listen(Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}}, "127.0.0.1:0", "", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = in.Close(context.Background()) })
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	b.Cleanup(tr.CloseIdleConnections)
	return in, tr
}

func BenchmarkLoopbackEmptyCall(b *testing.B) {
	in, tr := benchEnv(b)
	hc := &http.Client{Transport: tr}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := hc.Get(in.URL + "/_kpemu/health")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func benchUnwrap(b *testing.B, transport http.RoundTripper, url string) {
	c, err := kp.New(kp.ClientConfig{
		BaseURL: url, TokenURL: url + "/identity/token", APIKey: testAPIKey, InstanceID: testInstance,
	}, transport)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	root, err := c.CreateRootKey(ctx, "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	aad := []string{"byokd", "cluster:bench"}
	ct, err := c.Wrap(ctx, root.ID, nil, &aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := c.UnwrapV2(ctx, root.ID, ct, &aad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "unwraps/s")
}

// BenchmarkClientUnwrap: the real keyprotect-go-client with a keep-alive
// transport (what byokd uses), client and emulator in one process.
func BenchmarkClientUnwrap(b *testing.B) {
	in, tr := benchEnv(b)
	benchUnwrap(b, tr, in.URL)
}

// BenchmarkClientUnwrapNoKeepAlive: the client's own DefaultTransport, which
// opens a connection per request.
func BenchmarkClientUnwrapNoKeepAlive(b *testing.B) {
	in, _ := benchEnv(b)
	benchUnwrap(b, kp.DefaultTransport(), in.URL)
}
