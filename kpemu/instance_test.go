// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
)

func TestInstancePoliciesThroughTheClient(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	if ps, err := c.GetInstancePolicies(ctx(t)); err != nil || len(ps) != 0 {
		t.Fatalf("no instance policies yet: %+v %v", ps, err)
	}
	if err := c.SetAllowedNetworkInstancePolicy(ctx(t), true, "public-and-private"); err != nil {
		t.Fatal(err)
	}
	p, err := c.GetAllowedNetworkInstancePolicy(ctx(t))
	if err != nil || p == nil || p.PolicyType != policyAllowedNetwork || !*p.PolicyData.Enabled ||
		p.PolicyData.Attributes == nil || *p.PolicyData.Attributes.AllowedNetwork != "public-and-private" || p.CreatedAt == nil || p.UpdatedAt == nil {
		t.Fatalf("allowedNetwork: %+v %v", p, err)
	}
	three := 3
	if err := c.SetRotationInstancePolicy(ctx(t), true, &three); err != nil {
		t.Fatal(err)
	}
	p, err = c.GetRotationInstancePolicy(ctx(t))
	if err != nil || p == nil || *p.PolicyData.Attributes.IntervalMonth != 3 {
		t.Fatalf("rotation: %+v %v", p, err)
	}
	if err := c.SetMetricsInstancePolicy(ctx(t), true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAllowedIPInstancePolicy(ctx(t), true, []string{"127.0.0.0/8", "2001:db8::/32"}); err != nil {
		t.Fatal(err)
	}
	p, err = c.GetAllowedIPInstancePolicy(ctx(t))
	if err != nil || p == nil || p.PolicyData.Attributes.AllowedIP == nil || len(*p.PolicyData.Attributes.AllowedIP) != 2 {
		t.Fatalf("allowedIP: %+v %v", p, err)
	}
	if err := c.SetInstancePolicies(ctx(t), kp.MultiplePolicies{
		DualAuthDelete: &kp.BasicPolicyData{Enabled: false},
		AllowedIP:      &kp.AllowedIPPolicyData{Enabled: false},
	}); err != nil {
		t.Fatalf("several at once: %v", err)
	}
	ps, err := c.GetInstancePolicies(ctx(t))
	if err != nil || len(ps) != 5 {
		t.Fatalf("all instance policies: %+v %v", ps, err)
	}

	// A new generated root key takes the instance's rotation policy; an
	// imported one cannot (key-rotation.md).
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rp, err := c.GetRotationPolicy(ctx(t), root.ID); err != nil || rp == nil || rp.Rotation.Interval != 3 || !*rp.Rotation.Enabled {
		t.Fatalf("a new key's rotation policy: %+v %v", rp, err)
	}
	imp, err := c.CreateImportedRootKey(ctx(t), "imp", nil, base64.StdEncoding.EncodeToString(make([]byte, 32)), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if rp, err := c.GetRotationPolicy(ctx(t), imp.ID); err != nil || rp != nil {
		t.Fatalf("an imported key's rotation policy: %+v %v", rp, err)
	}

	wantKPError(t, c.SetAllowedNetworkInstancePolicy(ctx(t), true, "anywhere"), 400, "INVALID_FIELD_ERR")
	thirteen := 13
	wantKPError(t, c.SetRotationInstancePolicy(ctx(t), true, &thirteen), 400, "INVALID_FIELD_ERR")
	wantKPError(t, c.SetAllowedIPInstancePolicy(ctx(t), true, []string{"10.0.0.300/8"}), 400, "INVALID_FIELD_ERR")
	wantKPError(t, c.SetKeyCreateImportAccessInstancePolicy(ctx(t), true, map[string]bool{kp.CreateRootKey: true}), 400, "INVALID_QUERY_PARAM_ERR")
	for name, tc := range map[string]struct{ query, body, code string }{
		"mismatch":  {"?policy=dualAuthDelete", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":1},"resources":[{"policy_type":"metrics","policy_data":{"enabled":true}}]}`, "BODY_QUERY_PARAM_MISMATCH_ERR"},
		"twice":     {"", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":2},"resources":[{"policy_type":"metrics","policy_data":{"enabled":true}},{"policy_type":"metrics","policy_data":{"enabled":false}}]}`, "NUM_COLLECTION_RESOURCE_ERR"},
		"total":     {"?policy=metrics", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":2},"resources":[{"policy_type":"metrics","policy_data":{"enabled":true}}]}`, "COLLECTION_TOTAL_MISMATCH_ERR"},
		"unknown":   {"", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":1},"resources":[{"policy_type":"badName","policy_data":{"enabled":true}}]}`, "INVALID_FIELD_ERR"},
		"no body":   {"?policy=metrics", ``, "NO_BODY_ERR"},
		"ips off":   {"?policy=allowedIP", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":1},"resources":[{"policy_type":"allowedIP","policy_data":{"enabled":false,"attributes":{"allowed_ip":["10.0.0.0/8"]}}}]}`, "INVALID_FIELD_ERR"},
		"no enable": {"?policy=metrics", `{"metadata":{"collectionType":"` + typePolicy + `","collectionTotal":1},"resources":[{"policy_type":"metrics","policy_data":{}}]}`, "INVALID_FIELD_ERR"},
	} {
		status, _, body := e.raw("PUT", "/api/v2/instance/policies"+tc.query, []byte(tc.body))
		if status != 400 {
			t.Fatalf("%s: %d %s", name, status, body)
		}
		wantShape(t, status, body, 400, tc.code)
	}
}

// hostTransport sends every request to the emulator with another Host, as a
// client of the private endpoint (private.<region>.kms.cloud.ibm.com) would.
type hostTransport struct {
	host string
	base http.RoundTripper
}

func (h hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return h.base.RoundTrip(r)
}

func TestPrivateOnlyInstanceRefusesThePublicEndpoint(t *testing.T) {
	e := newEnv(t)
	public := e.client()
	cc := kp.ClientConfig{BaseURL: e.url, TokenURL: e.url + "/identity/token", APIKey: testAPIKey, InstanceID: testInstance, Verbose: kp.VerboseNone, Timeout: 10}
	private, err := kp.New(cc, hostTransport{host: "private.us-south.kms.cloud.ibm.com", base: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	root, err := public.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := public.SetAllowedNetworkInstancePolicy(ctx(t), true, "private-only"); err != nil {
		t.Fatal(err)
	}
	_, err = public.GetKeyMetadata(ctx(t), root.ID)
	kerr := wantKPError(t, err, 401, "")
	if kerr.Message != msgUnauthorized || len(kerr.Reasons) != 0 {
		t.Fatalf("the network policy's answer: %+v", kerr)
	}
	// The customer's own change back is refused too (settings-network-policy).
	wantKPError(t, public.SetAllowedNetworkInstancePolicy(ctx(t), true, "public-and-private"), 401, "")
	if e.token() == "" {
		t.Fatal("IAM is not held to the instance's network policy")
	}
	if _, err := private.GetKeyMetadata(ctx(t), root.ID); err != nil {
		t.Fatalf("through the private endpoint: %v", err)
	}
	if st, b := adminDo(t, e, "GET", "/_kpemu/instance-policies", ""); st != 200 || !bytes.Contains(b, []byte(`"allowed_network":"private-only"`)) {
		t.Fatalf("admin view: %d %s", st, b)
	}
	if err := private.SetAllowedNetworkInstancePolicy(ctx(t), true, "public-and-private"); err != nil {
		t.Fatal(err)
	}
	if _, err := public.GetKeyMetadata(ctx(t), root.ID); err != nil {
		t.Fatalf("public again: %v", err)
	}

	// The Go method and the admin route bypass the policy.
	if err := e.srv.SetAllowedNetwork(true); err != nil {
		t.Fatal(err)
	}
	_, err = public.GetKeyMetadata(ctx(t), root.ID)
	wantKPError(t, err, 401, "")
	if st, b := adminDo(t, e, "PUT", "/_kpemu/instance-policies", `{"allowedNetwork":"public-and-private"}`); st != 200 {
		t.Fatalf("admin: %d %s", st, b)
	}
	if _, err := public.GetKeyMetadata(ctx(t), root.ID); err != nil {
		t.Fatalf("after the admin route: %v", err)
	}
	if st, _ := adminDo(t, e, "PUT", "/_kpemu/instance-policies", `{"allowedNetwork":"nowhere"}`); st != 400 {
		t.Fatal("a bad allowedNetwork was accepted")
	}
}

func TestAllowedIPPolicy(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetAllowedIPInstancePolicy(ctx(t), true, []string{"10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetKeyMetadata(ctx(t), root.ID)
	kerr := wantKPError(t, err, 401, "") // 127.0.0.1 is not in 10.0.0.0/8
	if kerr.Message != msgUnauthorized || len(kerr.Reasons) != 0 {
		t.Fatalf("outside the list: %+v", kerr)
	}
	if err := e.srv.SetAllowedIPs([]string{"127.0.0.0/8", "2001:db8::/32"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
		t.Fatalf("inside the list: %v", err)
	}
	tok := e.token()
	for _, tc := range []struct {
		remote string
		status int
		code   string
	}{
		{"192.0.2.7:40000", 401, ""},
		{"127.0.0.1:40000", 200, ""},
		{"[::ffff:127.0.0.1]:40000", 200, ""}, // IPv4-mapped: an IPv4 client
		{"[2001:db8::1]:40000", 403, "FEATURE_RESTRICTED_ERR"},
		{"[::1]:40000", 403, "FEATURE_RESTRICTED_ERR"},
	} {
		r := httptest.NewRequest("GET", "/api/v2/keys/"+root.ID+"/metadata", nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("authorization", "Bearer "+tok)
		r.Header.Set("bluemix-instance", testInstance)
		w := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(w, r)
		if tc.status == 200 {
			if w.Code != 200 {
				t.Fatalf("%s: %d %s", tc.remote, w.Code, w.Body.Bytes())
			}
			continue
		}
		wantShape(t, w.Code, w.Body.Bytes(), tc.status, tc.code)
		if tc.code != "" {
			var eb errorBody
			_ = json.Unmarshal(w.Body.Bytes(), &eb)
			if eb.Resources[0].Reasons[0].Message != msgFeature {
				t.Fatalf("%s: %s", tc.remote, w.Body.Bytes())
			}
		}
	}
	if st, b := adminDo(t, e, "PUT", "/_kpemu/instance-policies", `{"allowedIPs":["10.0.0.0/8"]}`); st != 200 {
		t.Fatalf("admin: %d %s", st, b)
	}
	_, err = c.GetKeyMetadata(ctx(t), root.ID)
	wantKPError(t, err, 401, "")
	if st, b := adminDo(t, e, "PUT", "/_kpemu/instance-policies", `{"allowedIPs":["nonsense"]}`); st != 400 {
		t.Fatalf("a bad CIDR: %d %s", st, b)
	}
	if st, b := adminDo(t, e, "DELETE", "/_kpemu/instance-policies", ""); st != 200 || bytes.Contains(b, []byte("resources")) {
		t.Fatalf("clear: %d %s", st, b)
	}
	if _, err := c.GetKeyMetadata(ctx(t), root.ID); err != nil {
		t.Fatalf("after clearing: %v", err)
	}
	if err := e.srv.SetAllowedIPs([]string{"not-a-cidr"}); err == nil {
		t.Fatal("SetAllowedIPs took a bad CIDR")
	}
}

func TestInstancePoliciesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kpemu.json")
	cfg := Config{InstanceID: testInstance, APIKeys: []string{testAPIKey}, StatePath: path}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SetAllowedIPs([]string{"10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	if err := first.SetInstanceRotation(2); err != nil {
		t.Fatal(err)
	}
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(second.Handler())
	t.Cleanup(hs.Close)
	e := &env{t: t, srv: second, url: hs.URL}
	_, err = e.client().GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 401, "") // the allowed-IP list still holds
	body := second.instancePolicies("")
	if len(body.Resources) != 2 || body.Resources[0].PolicyType != policyAllowedIP || body.Resources[1].PolicyData.Attributes.IntervalMonth != 2 {
		t.Fatalf("after restart: %+v", body)
	}
}
