// SPDX-License-Identifier: Apache-2.0

// Package testenv starts the real parts byokd's tests run against — kpemu,
// byokd itself, swtpm, the WiredTiger builds and the plugin — and cleans
// them up with t.Cleanup.
package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/kpemu"
)

// Test credentials for the emulator. They are not secrets, but tests that
// check secret hygiene search output for them.
const (
	InstanceID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	APIKey     = "testenv-api-key-5b0d9e2a41"
)

// KP is a running emulator.
type KP struct {
	*kpemu.Instance
	// CAFile is the PEM CA that signed the emulator's certificate, when it
	// serves HTTPS (StartKPTLS).
	CAFile string
}

// StartKP starts kpemu on a free loopback port. Waiting periods the service
// enforces (30 s before enable, 1 h between rotations) are turned off unless
// mutate turns them on; mutate may change any other setting too.
func StartKP(t testing.TB, mutate ...func(*kpemu.Config)) *KP {
	t.Helper()
	return startKP(t, "", "", mutate)
}

// StartKPTLS is StartKP serving HTTPS on 127.0.0.1 with a certificate from
// a CA made for the test; KP.CAFile holds the CA.
func StartKPTLS(t testing.TB, mutate ...func(*kpemu.Config)) *KP {
	t.Helper()
	pki := NewPKI(t)
	cert, key := pki.Server(t, "127.0.0.1")
	k := startKP(t, cert, key, mutate)
	k.CAFile = pki.CAFile
	return k
}

func startKP(t testing.TB, certFile, keyFile string, mutate []func(*kpemu.Config)) *KP {
	t.Helper()
	cfg := kpemu.Config{
		InstanceID:     InstanceID,
		APIKeys:        []string{APIKey},
		ActionCooldown: -1,
		RotateCooldown: -1,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	in, err := kpemu.Listen(cfg, "127.0.0.1:0", certFile, keyFile)
	if err != nil {
		t.Fatalf("start kpemu: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = in.Close(ctx)
	})
	return &KP{Instance: in}
}

// TokenURL is the emulator's IAM token endpoint.
func (k *KP) TokenURL() string { return k.URL + "/identity/token" }

// Client is the real keyprotect-go-client pointed at the emulator, for a test
// to play the customer: create, disable, enable, delete, rotate keys.
func (k *KP) Client() *kp.Client {
	cfg := kp.ClientConfig{
		BaseURL:    k.URL,
		TokenURL:   k.TokenURL(),
		APIKey:     APIKey,
		InstanceID: InstanceID,
		Timeout:    10,
	}
	tr := kp.DefaultTransport()
	if k.CAFile != "" {
		// The client's IAM token source ignores the transport it is
		// given, so over HTTPS with a test CA the token is fetched here.
		pem, err := os.ReadFile(k.CAFile)
		if err != nil {
			panic("kp client: " + err.Error())
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		cfg.APIKey, cfg.TokenURL = "", ""
		cfg.Authorization = "Bearer " + k.token(&http.Client{Transport: tr, Timeout: 10 * time.Second})
	}
	c, err := kp.New(cfg, tr)
	if err != nil {
		panic("kp client: " + err.Error()) // only a malformed URL fails here
	}
	return c
}

// RootKey creates a root key and returns its id.
func (k *KP) RootKey(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := k.Client().CreateRootKey(ctx, name, nil)
	if err != nil {
		t.Fatalf("create root key: %v", err)
	}
	return key.ID
}

// Do runs one customer action against the emulator and fails the test on error.
func (k *KP) Do(t testing.TB, what string, fn func(ctx context.Context, c *kp.Client) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx, k.Client()); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// token fetches an IAM access token for APIKey from the emulator.
func (k *KP) token(hc *http.Client) string {
	resp, err := hc.PostForm(k.TokenURL(), url.Values{"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {APIKey}})
	if err != nil {
		panic("kp client token: " + err.Error())
	}
	defer resp.Body.Close()
	var t struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil || t.AccessToken == "" {
		panic(fmt.Sprintf("kp client token: HTTP %d %v", resp.StatusCode, err))
	}
	return t.AccessToken
}

// NodeConfig is a byokd configuration for a node built in the test's
// process (node.New) against this emulator: root key root, state in
// stateDir, cluster clusterID, provision on, a 1 s poll without jitter,
// no ops listener. Pass APIKey in node.Deps.
func (k *KP) NodeConfig(root, stateDir, clusterID string) *config.Config {
	c := config.Default()
	c.ClusterID = clusterID
	c.KeyProtect.URL, c.KeyProtect.IAMURL, c.KeyProtect.AllowInsecureHTTP = k.URL, k.URL, true
	c.KeyProtect.InstanceID, c.KeyProtect.RootKeyID = InstanceID, root
	c.KeyProtect.Timeout = config.Duration(3 * time.Second)
	c.State.Dir, c.State.Provision = stateDir, true
	c.Poll.Interval, c.Poll.Jitter = config.Duration(time.Second), 0
	c.Ops.Listen = ""
	return c
}
