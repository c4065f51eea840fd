// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/IBM/keyprotect-go-client/iam"
)

const (
	testInstance = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	testAPIKey   = "kpemu-test-api-key-7d1f0c"
)

func TestMain(m *testing.M) {
	// The client retries 5xx and 429 with backoff; tests that want to see
	// those answers look at them once.
	kp.RetryMax = 0
	iam.RetryMax = 0
	os.Exit(m.Run())
}

type env struct {
	t   *testing.T
	srv *Server
	url string
}

func newEnv(t *testing.T, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, srv: s, url: hs.URL}
}

// client returns the real keyprotect-go-client pointed at the emulator.
func (e *env) client(mutate ...func(*kp.ClientConfig)) *kp.Client {
	e.t.Helper()
	cc := kp.ClientConfig{
		BaseURL:    e.url,
		TokenURL:   e.url + "/identity/token",
		APIKey:     testAPIKey,
		InstanceID: testInstance,
		Verbose:    kp.VerboseNone,
		Timeout:    10,
	}
	for _, m := range mutate {
		m(&cc)
	}
	c, err := kp.New(cc, kp.DefaultTransport())
	if err != nil {
		e.t.Fatalf("kp.New: %v", err)
	}
	return c
}

func (e *env) token() string {
	e.t.Helper()
	resp, err := http.PostForm(e.url+"/identity/token", map[string][]string{
		"grant_type": {grantAPIKey}, "apikey": {testAPIKey},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok iamToken
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		e.t.Fatalf("token: %v %+v", err, tok)
	}
	return tok.AccessToken
}

// raw sends a request with a valid token and instance and returns status,
// headers and body.
func (e *env) raw(method, path string, body []byte, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("authorization", "Bearer "+e.token())
	req.Header.Set("bluemix-instance", testInstance)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// wantKPError checks that err is the client's *kp.Error with this status and,
// when code is not empty, this reason code.
func wantKPError(t *testing.T, err error, status int, code string) *kp.Error {
	t.Helper()
	var kerr *kp.Error
	if !errors.As(err, &kerr) {
		t.Fatalf("want *kp.Error %d %s, got %T %v", status, code, err, err)
	}
	if kerr.StatusCode != status {
		t.Fatalf("want status %d, got %d: %v", status, kerr.StatusCode, kerr)
	}
	if code != "" {
		if len(kerr.Reasons) == 0 || kerr.Reasons[0].Code != code {
			t.Fatalf("want reason %s, got %v", code, kerr)
		}
		if kerr.Reasons[0].Status != status || kerr.Reasons[0].MoreInfo == "" || kerr.Reasons[0].Message == "" {
			t.Fatalf("reason not in the service's shape: %+v", kerr.Reasons[0])
		}
	}
	if !strings.HasPrefix(kerr.Message, http.StatusText(status)) && !(status == 422 && strings.HasPrefix(kerr.Message, "Unprocessable Entity")) {
		t.Fatalf("errorMsg %q does not start with the status text", kerr.Message)
	}
	return kerr
}

// wantShape checks a raw error body is in the service's JSON shape.
func wantShape(t *testing.T, status int, body []byte, wantStatus int, code string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("want status %d, got %d: %s", wantStatus, status, body)
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if eb.Metadata.CollectionType != typeError || eb.Metadata.CollectionTotal != 1 || len(eb.Resources) != 1 || eb.Resources[0].ErrorMsg == "" {
		t.Fatalf("body not in the service's error shape: %s", body)
	}
	if code != "" {
		r := eb.Resources[0].Reasons
		if len(r) != 1 || r[0].Code != code || r[0].Status != wantStatus || r[0].MoreInfo == "" {
			t.Fatalf("want reason %s/%d, got %s", code, wantStatus, body)
		}
	}
}
