// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestBadInputGetsServiceShapedErrors(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	wrap := "/api/v2/keys/" + root.ID + "/actions/wrap"
	unwrap := "/api/v2/keys/" + root.ID + "/actions/unwrap"
	big := bytes.Repeat([]byte("a"), maxBody+1)
	bigJSON := append([]byte(`{"plaintext":"`), append(bytes.Repeat([]byte("A"), maxBody), []byte(`"}`)...)...)
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		status int
		code   string
	}{
		{"malformed JSON on wrap", "POST", wrap, []byte(`{"plaintext":`), 400, "BAD_BODY_ERR"},
		{"JSON of the wrong type", "POST", wrap, []byte(`{"plaintext":42}`), 400, "BAD_BODY_ERR"},
		{"bad base64 plaintext", "POST", wrap, []byte(`{"plaintext":"***"}`), 400, "INVALID_FIELD_ERR"},
		{"aad of the wrong type", "POST", wrap, []byte(`{"aad":"x"}`), 400, "BAD_BODY_ERR"},
		{"aad entry too long", "POST", wrap, []byte(`{"aad":["` + strings.Repeat("x", 256) + `"]}`), 400, "BAD_BODY_ERR"},
		{"unwrap without body", "POST", unwrap, nil, 400, "NO_BODY_ERR"},
		{"unwrap without ciphertext", "POST", unwrap, []byte(`{}`), 400, "INVALID_FIELD_ERR"},
		{"unwrap of non-base64", "POST", unwrap, []byte(`{"ciphertext":"%%%"}`), 400, "INVALID_FIELD_ERR"},
		{"unwrap of base64 that is no ciphertext", "POST", unwrap, []byte(`{"ciphertext":"bm9wZQ=="}`), 400, "INVALID_FIELD_ERR"},
		{"body over 1 MiB", "POST", wrap, big, 413, "BODY_TOO_LARGE_ERR"},
		{"valid JSON over 1 MiB", "POST", wrap, bigJSON, 413, "BODY_TOO_LARGE_ERR"},
		{"create over 1 MiB", "POST", "/api/v2/keys", big, 413, "BODY_TOO_LARGE_ERR"},
		{"create without body", "POST", "/api/v2/keys", nil, 400, "NO_BODY_ERR"},
		{"create malformed", "POST", "/api/v2/keys", []byte(`{"metadata":{`), 400, "BAD_BODY_ERR"},
		{"create without metadata", "POST", "/api/v2/keys", []byte(`{"resources":[{"name":"ab"}]}`), 400, "BAD_BODY_ERR"},
		{"create two keys", "POST", "/api/v2/keys", []byte(`{"metadata":{"collectionType":"` + typeKey + `","collectionTotal":2},"resources":[{"name":"ab"},{"name":"cd"}]}`), 400, "BAD_BODY_ERR"},
		{"create total mismatch", "POST", "/api/v2/keys", []byte(`{"metadata":{"collectionType":"` + typeKey + `","collectionTotal":3},"resources":[{"name":"ab"}]}`), 400, "COLLECTION_TOTAL_MISMATCH_ERR"},
		{"create bad payload", "POST", "/api/v2/keys", []byte(`{"metadata":{"collectionType":"` + typeKey + `","collectionTotal":1},"resources":[{"name":"ab","payload":"!!"}]}`), 400, "INVALID_FIELD_ERR"},
		{"unknown action", "POST", "/api/v2/keys/" + root.ID + "/actions/explode", []byte(`{}`), 400, "INVALID_QUERY_PARAM_ERR"},
		{"legacy form unknown action", "POST", "/api/v2/keys/" + root.ID + "?action=explode", []byte(`{}`), 400, "INVALID_QUERY_PARAM_ERR"},
		{"unknown route", "GET", "/api/v2/nothing", nil, 404, "NOT_FOUND_ERR"},
		{"unknown top-level route", "GET", "/v1/keys", nil, 404, "NOT_FOUND_ERR"},
		{"unknown key", "GET", "/api/v2/keys/0e0e0e0e-0000-4000-8000-000000000000", nil, 404, "KEY_NOT_FOUND_ERR"},
		{"unknown alias", "GET", "/api/v2/keys/no-such-alias", nil, 404, "KEY_NOT_FOUND_ERR"},
		{"bad list limit", "GET", "/api/v2/keys?limit=abc", nil, 400, "INVALID_QUERY_PARAM_ERR"},
		{"bad force", "DELETE", "/api/v2/keys/" + root.ID + "?force=maybe", nil, 400, "INVALID_QUERY_PARAM_ERR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := e.raw(tc.method, tc.path, tc.body)
			wantShape(t, status, body, tc.status, tc.code)
		})
	}

	// The legacy ?action= form works like the path form.
	dek := base64.StdEncoding.EncodeToString(make([]byte, 32))
	status, _, body := e.raw("POST", "/api/v2/keys/"+root.ID+"?action=wrap", []byte(`{"plaintext":"`+dek+`"}`))
	if status != 200 {
		t.Fatalf("legacy wrap: %d %s", status, body)
	}
	var wr actionResponse
	if err := json.Unmarshal(body, &wr); err != nil || wr.Ciphertext == "" || wr.Plaintext != "" {
		t.Fatalf("legacy wrap answer: %s", body)
	}

	// IAM answers bad requests in its own shape.
	for _, form := range []string{"", "grant_type=password", "grant_type=" + grantAPIKey} {
		resp, err := http.Post(e.url+"/identity/token", "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		var ie iamError
		err = json.NewDecoder(resp.Body).Decode(&ie)
		resp.Body.Close()
		if resp.StatusCode != 400 || err != nil || !strings.HasPrefix(ie.ErrorCode, "BXNIM") || ie.ErrorMessage == "" {
			t.Fatalf("token request %q: %d %+v %v", form, resp.StatusCode, ie, err)
		}
	}
}

func TestRequestsWithoutCredentials(t *testing.T) {
	e := newEnv(t)
	for name, hdr := range map[string][]string{
		"no authorization":   {"authorization", ""},
		"not bearer":         {"authorization", "Token abc"},
		"bearer, bad token":  {"authorization", "Bearer abc.def.ghi"},
		"no instance header": {"bluemix-instance", ""},
	} {
		t.Run(name, func(t *testing.T) {
			status, _, body := e.raw("GET", "/api/v2/keys", nil, hdr...)
			switch name {
			case "not bearer":
				wantShape(t, status, body, 400, "BEARER_SUB_EXTRACTION_ERR")
			case "no instance header":
				wantShape(t, status, body, 400, "")
			default:
				wantShape(t, status, body, 401, "")
			}
		})
	}
}
