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
