// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The fuzz targets feed arbitrary request bodies to the decoders and to the
// whole handler: nothing may panic, and every error is in the service's shape.

func FuzzDecodeAction(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"plaintext":"AAAA"}`, `{"ciphertext":"eyJ9","aad":["a"]}`, `{"aad":[1]}`, `{"payload":"` + "QUFB" + `"}`, `[`, `null`} {
		f.Add("wrap", []byte(s))
		f.Add("unwrap", []byte(s))
		f.Add("rotate", []byte(s))
	}
	f.Fuzz(func(t *testing.T, action string, body []byte) {
		if len(body) == 0 {
			body = nil
		}
		_, _, e := decodeAction(action, body)
		if e != nil {
			checkErrShape(t, e)
		}
	})
}

func FuzzDecodeCreateKey(f *testing.F) {
	f.Add([]byte(`{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","extractable":true,"payload":"QUFB"}]}`))
	f.Add([]byte(`{"metadata":{},"resources":[]}`))
	f.Add([]byte(`{"metadata":{"collectionType":"x","collectionTotal":1},"resources":[{"name":"ab","aliases":["a b"],"expirationDate":"2000-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{`))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 {
			body = nil
		}
		_, _, e := decodeCreateKey(body, now)
		if e != nil {
			checkErrShape(t, e)
		}
	})
}

func FuzzDecodePolicies(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"rotation":{"interval_month":3}}]}`,
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"dualAuthDelete":{"enabled":true}}]}`,
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":true,"attributes":{"allowed_ip":["10.0.0.0/8"]}}}]}`,
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"rotation","policy_data":{"enabled":true,"attributes":{"interval_month":13}}}]}`,
		`{`, ``,
	} {
		f.Add(s, "")
		f.Add(s, "rotation")
		f.Add(s, "allowedIP")
	}
	f.Fuzz(func(t *testing.T, body, which string) {
		b := []byte(body)
		if len(b) == 0 {
			b = nil
		}
		if _, e := decodeKeyPolicies(b, which); e != nil {
			checkErrShape(t, e)
		}
		if _, e := decodeInstancePolicies(b, which); e != nil {
			checkErrShape(t, e)
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add("eyJjaXBoZXJ0ZXh0IjoiIiwiaXYiOiIiLCJ2ZXJzaW9uIjoia3BlbXUtMSIsImhhbmRsZSI6IngifQ==")
	f.Add("")
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _, _ = parseEnvelope(s)
	})
}

// FuzzHandler sends arbitrary method, path and body through the whole
// emulator with valid credentials.
func FuzzHandler(f *testing.F) {
	s, err := New(Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}})
	if err != nil {
		f.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/identity/token", bytes.NewReader([]byte("grant_type="+grantAPIKey+"&apikey="+testAPIKey)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	s.Handler().ServeHTTP(rec, req)
	var tok iamToken
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || tok.AccessToken == "" {
		f.Fatalf("token: %s", rec.Body.Bytes())
	}
	rootID := createRootForFuzz(f, s, tok.AccessToken)
	for _, seed := range []struct{ m, p, b string }{
		{"POST", "/api/v2/keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab"}]}`},
		{"POST", "/api/v2/keys/" + rootID + "/actions/wrap", `{}`},
		{"POST", "/api/v2/keys/" + rootID + "/actions/unwrap", `{"ciphertext":"x"}`},
		{"POST", "/api/v2/keys/" + rootID + "/actions/rotate", ``},
		{"DELETE", "/api/v2/keys/" + rootID, ``},
		{"GET", "/api/v2/keys?limit=2&state=1,5", ``},
		{"POST", "/api/v2/keys/" + rootID + "/aliases/abc", ``},
		{"GET", "/api/v2/keys/" + rootID + "/versions?totalCount=true", ``},
		{"PUT", "/api/v2/keys/" + rootID + "/policies?policy=rotation", `{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"rotation":{"enabled":true,"interval_month":3}}]}`},
		{"GET", "/api/v2/keys/" + rootID + "/policies", ``},
		{"POST", "/api/v2/keys/" + rootID + "/actions/setKeyForDeletion", ``},
		{"POST", "/api/v2/keys/" + rootID + "/actions/sync", ``},
		{"PUT", "/api/v2/instance/policies?policy=dualAuthDelete", `{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"dualAuthDelete","policy_data":{"enabled":true}}]}`},
		{"GET", "/api/v2/instance/policies", ``},
		{"GET", "/api/v2/keys/registrations?urlEncodedResourceCRNQuery=crn:v1:*", ``},
	} {
		f.Add(seed.m, seed.p, []byte(seed.b))
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if len(path) == 0 || path[0] != '/' {
			path = "/" + path
		}
		m := methods[len(method)%len(methods)]
		r, err := http.NewRequest(m, "http://kpemu"+path, bytes.NewReader(body))
		if err != nil || len(path) > 2048 || bytes.HasPrefix([]byte(r.URL.Path), []byte("/_kpemu")) {
			return
		}
		r.Header.Set("authorization", "Bearer "+tok.AccessToken)
		r.Header.Set("bluemix-instance", testInstance)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s -> %d %s", m, path, w.Code, w.Body.Bytes())
		}
		if w.Code >= 400 && r.URL.Path != "/identity/token" && r.URL.Path != "/oidc/token" {
			var eb errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || len(eb.Resources) != 1 || eb.Resources[0].ErrorMsg == "" {
				t.Fatalf("%s %s -> %d, body not in the service's shape: %s", m, path, w.Code, w.Body.Bytes())
			}
		}
	})
}

func createRootForFuzz(f *testing.F, s *Server, tok string) string {
	body := `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"fuzz-root"}]}`
	r := httptest.NewRequest("POST", "/api/v2/keys", bytes.NewReader([]byte(body)))
	r.Header.Set("authorization", "Bearer "+tok)
	r.Header.Set("bluemix-instance", testInstance)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	var kb keysBody
	if err := json.Unmarshal(w.Body.Bytes(), &kb); err != nil || len(kb.Resources) != 1 {
		f.Fatalf("create root: %d %s", w.Code, w.Body.Bytes())
	}
	return kb.Resources[0].ID
}

func checkErrShape(t *testing.T, e *apiError) {
	t.Helper()
	if e.status < 400 || e.status > 499 || e.msg == "" || e.code == "" || e.reason == "" {
		t.Fatalf("error not in the service's shape: %+v", e)
	}
	if _, err := json.Marshal(e.body()); err != nil {
		t.Fatal(err)
	}
}
