// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

func adminDo(t *testing.T, e *env, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestFaultInjectionThroughAdminAPI(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("latency", func(t *testing.T) {
		if st, b := adminDo(t, e, "PUT", "/_kpemu/faults", `{"latency":"150ms"}`); st != 200 {
			t.Fatalf("set faults: %d %s", st, b)
		}
		start := time.Now()
		if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("answer came after %v, want at least 150ms", d)
		}
	})
	t.Run("server errors", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"errorRate":1,"errorStatus":500}`)
		_, err := c.GetKeyMetadata(ctx(t), root.ID)
		wantKPError(t, err, 500, "INTERNAL_SERVER_ERR")
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"errorRate":1}`)
		_, err = c.GetKeyMetadata(ctx(t), root.ID)
		wantKPError(t, err, 503, "INTERNAL_SERVER_ERR")
	})
	t.Run("throttling with Retry-After", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"throttleRate":1,"retryAfter":"3s","routes":["keys_list"]}`)
		status, hdr, body := e.raw("GET", "/api/v2/keys", nil)
		wantShape(t, status, body, 429, "TOO_MANY_REQUESTS_ERR")
		if hdr.Get("Retry-After") != "3" {
			t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
		}
	})
	t.Run("connection resets", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"resetRate":1}`)
		_, err := c.GetKeyMetadata(ctx(t), root.ID)
		var uerr *kp.URLError
		if !errors.As(err, &uerr) {
			t.Fatalf("want a transport error, got %T %v", err, err)
		}
	})
	t.Run("outage and recovery", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"outage":true}`)
		_, err := e.client().GetKeyMetadata(ctx(t), root.ID) // new client: the IAM call fails too
		if err == nil {
			t.Fatal("request succeeded during an outage")
		}
		if st, b := adminDo(t, e, "GET", "/_kpemu/health", ""); st != 200 {
			t.Fatalf("admin API must stay up during an outage: %d %s", st, b)
		}
		adminDo(t, e, "DELETE", "/_kpemu/faults", "")
		if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
			t.Fatalf("after the outage: %v", err)
		}
	})
	t.Run("faults limited to routes", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"errorRate":1,"routes":["action_unwrap"]}`)
		ct, err := c.Wrap(ctx(t), root.ID, nil, nil)
		if err != nil {
			t.Fatalf("wrap is not a faulted route: %v", err)
		}
		_, err = c.Unwrap(ctx(t), root.ID, ct, nil)
		wantKPError(t, err, 503, "")
		adminDo(t, e, "DELETE", "/_kpemu/faults", "")
	})
	t.Run("rate limit", func(t *testing.T) {
		// 2 per second with a bucket of 3: three requests pass at once, the
		// fourth is refused with a Retry-After that rounds the wait up.
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"rateLimit":2,"burst":3}`)
		for i := range 3 {
			if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
				t.Fatalf("request %d within the burst: %v", i, err)
			}
		}
		status, hdr, body := e.raw("GET", "/api/v2/keys/"+root.ID+"/metadata", nil)
		wantShape(t, status, body, 429, "TOO_MANY_REQUESTS_ERR")
		if hdr.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q, want 1", hdr.Get("Retry-After"))
		}
		// IAM is a separate service: never limited by Key Protect's quota.
		if e.token() == "" {
			t.Fatal("no IAM token while Key Protect is rate limited")
		}
		time.Sleep(600 * time.Millisecond) // one token back at 2/s
		if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
			t.Fatalf("after the bucket refilled: %v", err)
		}
		adminDo(t, e, "DELETE", "/_kpemu/faults", "")
		for range 5 {
			if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
				t.Fatalf("limit lifted: %v", err)
			}
		}
	})
	t.Run("bad fault settings are refused", func(t *testing.T) {
		for _, body := range []string{`{"errorRate":2}`, `{"errorStatus":404}`, `{"latency":"soon"}`, `{"surprise":true}`, `{"latency":"-1s"}`, `{"rateLimit":-1}`, `{"burst":5}`} {
			if st, _ := adminDo(t, e, "PUT", "/_kpemu/faults", body); st != 400 {
				t.Fatalf("%s accepted with %d", body, st)
			}
		}
	})

	st, b := adminDo(t, e, "GET", "/_kpemu/stats", "")
	var stats struct {
		Routes map[string]RouteStats `json:"routes"`
	}
	if st != 200 || json.Unmarshal(b, &stats) != nil {
		t.Fatalf("stats: %d %s", st, b)
	}
	md := stats.Routes["key_metadata"]
	if md.Requests < 5 || md.Status["200"] < 2 || md.Faults["ratelimit"] != 1 || md.Status["429"] != 1 || md.Status["500"] != 1 || md.Status["503"] != 1 || md.Faults["reset"] < 1 || md.Faults["latency"] != 1 {
		t.Fatalf("key_metadata counters: %+v", md)
	}
	if stats.Routes["action_unwrap"].Status["503"] != 1 || stats.Routes["keys_list"].Status["429"] != 1 || stats.Routes["iam_token"].Requests == 0 {
		t.Fatalf("counters: %s", b)
	}
	st, b = adminDo(t, e, "GET", "/_kpemu/requests?limit=3", "")
	if st != 200 || bytes.Count(b, []byte(`"route"`)) != 3 {
		t.Fatalf("request log: %d %s", st, b)
	}
	if bytes.Contains(b, []byte(testAPIKey)) {
		t.Fatal("request log holds the API key")
	}
	adminDo(t, e, "DELETE", "/_kpemu/stats", "")
	if len(e.srv.Stats()) != 0 {
		t.Fatal("stats not reset")
	}
}

func TestAdminClockAndAPIKeys(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DisableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	if st, b := adminDo(t, e, "POST", "/_kpemu/clock", `{"advance":"31s"}`); st != 200 {
		t.Fatalf("clock: %d %s", st, b)
	}
	if err := c.EnableKey(ctx(t), root.ID); err != nil {
		t.Fatalf("enable after the clock moved: %v", err)
	}
	if st, _ := adminDo(t, e, "POST", "/_kpemu/clock", `{"advance":"-5s"}`); st != 400 {
		t.Fatal("the clock moved backwards")
	}
	if st, _ := adminDo(t, e, "POST", "/_kpemu/apikeys", `{"apikey":"`+testAPIKey+`","revoked":true}`); st != 200 {
		t.Fatal("revoke failed")
	}
	_, err = c.GetKeyMetadata(ctx(t), root.ID)
	wantKPError(t, err, 401, "")
	if st, _ := adminDo(t, e, "GET", "/_kpemu/nothing", ""); st != 404 {
		t.Fatal("unknown admin route answered")
	}
}

func TestRefusalPresets(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Wrap(ctx(t), root.ID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		preset, code, msg string
		status            int
		html              bool
	}{
		{RefuseNetworkPolicy, "", msgUnauthorized, 401, false},
		{RefuseWrongRegion, "", "Unauthorized: Either the user does not have access to the specified resource, the resource does not exist, or the region is incorrectly set", 401, false},
		{RefuseIPv6Policy, "FEATURE_RESTRICTED_ERR", "", 403, false},
		{RefuseHSM, "UNPROCESSABLE_CIPHERTEXT_ERR", "", 422, false},
		{RefuseProxy407, "", "", 407, true},
		{RefuseLB403, "", "", 403, true},
		{RefuseLB404, "", "", 404, true},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			if st, b := adminDo(t, e, "PUT", "/_kpemu/faults", `{"refusal":"`+tc.preset+`"}`); st != 200 {
				t.Fatalf("set refusal: %d %s", st, b)
			}
			t.Cleanup(func() { adminDo(t, e, "DELETE", "/_kpemu/faults", "") })
			_, err := c.Unwrap(ctx(t), root.ID, ct, nil)
			var kerr *kp.Error
			if !errors.As(err, &kerr) || kerr.StatusCode != tc.status {
				t.Fatalf("want status %d, got %v", tc.status, err)
			}
			if tc.html {
				if !bytes.Contains(kerr.BodyContent, []byte("<html")) || bytes.Contains(kerr.BodyContent, []byte(typeError)) || len(kerr.Reasons) != 0 {
					t.Fatalf("want an HTML page not in Key Protect's shape: %s", kerr.BodyContent)
				}
				status, hdr, _ := e.raw("GET", "/api/v2/keys", nil)
				if status != tc.status || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
					t.Fatalf("raw: %d %q", status, hdr.Get("Content-Type"))
				}
				if tc.status == 407 && hdr.Get("Proxy-Authenticate") == "" {
					t.Fatal("407 without Proxy-Authenticate")
				}
				return
			}
			wantKPError(t, err, tc.status, tc.code)
			if tc.msg != "" && kerr.Message != tc.msg {
				t.Fatalf("errorMsg %q, want %q", kerr.Message, tc.msg)
			}
			if tc.code == "" && len(kerr.Reasons) != 0 {
				t.Fatalf("want no reasons: %s", kerr.BodyContent)
			}
			status, _, body := e.raw("GET", "/api/v2/keys", nil)
			wantShape(t, status, body, tc.status, tc.code)
		})
	}

	t.Run("the handler does not run", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"refusal":"network-policy","routes":["keys_create"]}`)
		_, err := c.CreateRootKey(ctx(t), "refused", nil)
		wantKPError(t, err, 401, "")
		adminDo(t, e, "DELETE", "/_kpemu/faults", "")
		keys, err := c.GetKeys(ctx(t), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys.Keys {
			if k.Name == "refused" {
				t.Fatal("a refused create made a key")
			}
		}
	})
	t.Run("IAM only when named", func(t *testing.T) {
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"refusal":"lb-403"}`)
		if e.token() == "" {
			t.Fatal("no IAM token while Key Protect refuses")
		}
		adminDo(t, e, "PUT", "/_kpemu/faults", `{"refusal":"lb-403","routes":["iam_token"]}`)
		resp, err := http.PostForm(e.url+"/identity/token", map[string][]string{"grant_type": {grantAPIKey}, "apikey": {testAPIKey}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("IAM named in routes: %d", resp.StatusCode)
		}
		if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
			t.Fatalf("Key Protect is not among the routes: %v", err)
		}
		adminDo(t, e, "DELETE", "/_kpemu/faults", "")
	})
	t.Run("a rate", func(t *testing.T) {
		e.srv.ResetStats()
		if err := e.srv.SetFaults(Faults{Refusal: RefuseNetworkPolicy, RefusalRate: 0.5, Routes: []string{"key_metadata"}}); err != nil {
			t.Fatal(err)
		}
		refused := 0
		for range 200 {
			if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
				wantKPError(t, err, 401, "")
				refused++
			}
		}
		if refused < 40 || refused > 160 {
			t.Fatalf("%d of 200 refused at rate 0.5", refused)
		}
		if got := e.srv.Stats()["key_metadata"].Faults["refusal"]; got != int64(refused) {
			t.Fatalf("stats count %d refusals, want %d", got, refused)
		}
		_ = e.srv.SetFaults(Faults{})
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, body := range []string{`{"refusal":"firewall"}`, `{"refusalRate":0.5}`, `{"refusal":"hsm","refusalRate":1.5}`, `{"refusal":"hsm","refusalRate":-1}`} {
			if st, _ := adminDo(t, e, "PUT", "/_kpemu/faults", body); st != 400 {
				t.Fatalf("%s accepted with %d", body, st)
			}
		}
	})
}

func TestDeletedAsDeactivated(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Wrap(ctx(t), root.ID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal); err != nil {
		t.Fatal(err)
	}
	if st, b := adminDo(t, e, "PUT", "/_kpemu/faults", `{"deletedAsDeactivated":true}`); st != 200 || !bytes.Contains(b, []byte(`"deletedAsDeactivated":true`)) {
		t.Fatalf("set: %d %s", st, b)
	}
	check := func(what string, k *kp.Key) {
		t.Helper()
		if k.State != int(kp.Deactivated) || k.Deleted == nil || !*k.Deleted || k.DeletionDate == nil || k.PurgeAllowedFrom == nil {
			t.Fatalf("%s: want state 3 with deleted: true and its deletion fields, got %+v", what, k)
		}
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("metadata", md)
	got, err := c.GetKey(ctx(t), root.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("get", got)
	list, err := c.ListKeys(ctx(t), nil)
	if err != nil || len(list.Keys) != 1 {
		t.Fatalf("the default list (states 0-3) shows the key as deactivated: %+v %v", list, err)
	}
	check("list", &list.Keys[0])
	_, err = c.Unwrap(ctx(t), root.ID, ct, nil)
	wantKPError(t, err, 410, "KEY_DELETED_ERR")

	adminDo(t, e, "DELETE", "/_kpemu/faults", "")
	md, err = c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.State != int(kp.Destroyed) {
		t.Fatalf("fault off: %+v %v", md, err)
	}
}
