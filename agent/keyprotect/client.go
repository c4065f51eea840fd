// SPDX-License-Identifier: Apache-2.0

// Package keyprotect talks to IBM Key Protect for byokd — metadata, wrap and
// unwrap of the node key — and classifies every answer for the lock.
//
// Metadata goes through keyprotect-go-client. The two calls whose answers
// carry the clear data encryption key — unwrap, and wrap without plaintext
// (create a DEK) — do not: the client hands key material back as Go strings
// and leaves its JSON buffers in the heap, where nothing can wipe them.
// Those two calls run on a connection of their own whose answer is read
// into locked memory and decoded there (see secret.go).
package keyprotect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

func init() {
	// byokd runs its own retry loop with backoff that honours Retry-After
	// and drives the lock state; the client's built-in retries (up to 4,
	// waiting up to 30 s each) would hide failures from it.
	kp.RetryMax = 0
}

// Config is what the client needs to reach Key Protect.
type Config struct {
	URL        string // e.g. https://us-south.kms.cloud.ibm.com or the private endpoint
	TokenURL   string // IAM token endpoint, e.g. https://iam.cloud.ibm.com/identity/token
	InstanceID string
	KeyRing    string
	RootKeyID  string
	APIKey     string
	CAFile     string // optional PEM bundle for both endpoints
	Timeout    time.Duration
	// Log receives what the client cannot return as an error; nil
	// discards it.
	Log *slog.Logger
}

// Client calls Key Protect: metadata and IAM tokens over a keep-alive
// transport of its own, unwrap and wrap each on a connection of its own.
type Client struct {
	cfg    Config
	base   *url.URL
	kp     *kp.Client
	tokens *tokenSource
	hc     *http.Client
	tls    *tls.Config // for the calls that carry key material
	proxy  func(*http.Request) (*url.URL, error)

	wipeWarning sync.Once
}

// KeyInfo is what byokd needs from the root key's metadata.
type KeyInfo struct {
	ID          string
	State       int
	Deleted     bool
	Version     string
	Expiration  *time.Time
	Extractable bool
}

// New builds a client; it does not contact Key Protect.
func New(cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	base, err := url.Parse(cfg.URL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("key protect url %q: want http(s)://host[:port][/path]", cfg.URL)
	}
	// Unwrap and wrap tunnel through an HTTP proxy with CONNECT; say at
	// start when the environment names another kind.
	if p, err := http.ProxyFromEnvironment(&http.Request{URL: base}); err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", cfg.URL, err)
	} else if p != nil && p.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s for %s: byokd reaches Key Protect through http:// proxies (CONNECT) only", p.Redacted(), cfg.URL)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &answerTransport{base: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}}
	hc := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	c, err := kp.New(kp.ClientConfig{
		BaseURL:    cfg.URL,
		InstanceID: cfg.InstanceID,
		KeyRing:    cfg.KeyRing,
		Verbose:    kp.VerboseNone,
		Timeout:    cfg.Timeout.Seconds(),
		// Authorization comes per request from our token source; the
		// client's own IAM source would use the default transport.
		Authorization: "unused",
	}, tr)
	if err != nil {
		return nil, fmt.Errorf("key protect client: %w", err)
	}
	// The client logs nothing at VerboseNone; make sure it never prints.
	c.Logger = kp.NewLogger(func(...any) {})
	own := tlsCfg.Clone()
	own.NextProtos = []string{"http/1.1"}
	return &Client{
		cfg: cfg, base: base, kp: c, hc: hc, tls: own, proxy: http.ProxyFromEnvironment,
		tokens: &tokenSource{url: cfg.TokenURL, apiKey: cfg.APIKey, hc: hc},
	}, nil
}

// answerTransport records the headers of an error answer into a holder the
// caller put in the request's context: keyprotect-go-client's error type
// keeps the body but not the headers (Retry-After, Content-Type).
type answerTransport struct{ base http.RoundTripper }

type answerKey struct{}

type answerHolder struct {
	mu     sync.Mutex
	header http.Header
}

func (t *answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode >= 300 {
		if h, ok := req.Context().Value(answerKey{}).(*answerHolder); ok {
			h.mu.Lock()
			h.header = resp.Header.Clone()
			h.mu.Unlock()
		}
	}
	return resp, err
}

// call runs fn with an IAM token; a 401 is retried once with a fresh token,
// since our cached one may have just expired on the server's clock. When no
// fresh token can be had, the 401 stands: it is Key Protect's answer, and
// IAM being unreachable does not make it transient.
func (c *Client) call(ctx context.Context, fn func(ctx context.Context, token string) error) error {
	var first *APIError
	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.token(ctx, attempt > 0)
		if err != nil {
			if first != nil {
				first.Refresh = err
				return first
			}
			return err
		}
		err = fn(ctx, tok)
		var ae *APIError
		if attempt == 0 && errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			first = ae
			continue
		}
		return err
	}
}

// Metadata reads the root key's metadata (never its material).
func (c *Client) Metadata(ctx context.Context) (*KeyInfo, error) {
	var k *kp.Key
	err := c.call(ctx, func(ctx context.Context, tok string) error {
		holder := &answerHolder{}
		ctx = context.WithValue(kp.NewContextWithAuth(ctx, "Bearer "+tok), answerKey{}, holder)
		var err error
		k, err = c.kp.GetKeyMetadata(ctx, c.cfg.RootKeyID)
		var kerr *kp.Error
		if errors.As(err, &kerr) {
			holder.mu.Lock()
			h := holder.header
			holder.mu.Unlock()
			if h == nil {
				h = http.Header{}
			}
			return newAPIError("metadata", kerr.StatusCode, h, kerr.BodyContent, time.Now())
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read root key %s metadata: %w", c.cfg.RootKeyID, err)
	}
	info := &KeyInfo{ID: k.ID, State: k.State, Expiration: k.Expiration, Extractable: k.Extractable}
	if k.Deleted != nil {
		info.Deleted = *k.Deleted
	}
	if k.KeyVersion != nil {
		info.Version = k.KeyVersion.ID
	}
	return info, nil
}

// CheckUsable turns a key's metadata into an error when its state forbids
// use: disabled, deleted (by state or by the deleted flag, which some
// answers set while the state still reads deactivated), not yet active. An
// expired (deactivated) key still unwraps in Key Protect; the caller
// decides (lock_on_expired).
func CheckUsable(info *KeyInfo) error {
	if info.Deleted {
		return &StateError{KeyID: info.ID, State: info.State, Deleted: true}
	}
	switch info.State {
	case StateActive, StateDeactivated:
		return nil
	}
	return &StateError{KeyID: info.ID, State: info.State}
}

// Close drops idle connections.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}

// actionPath is the path of a key action on the root key.
func (c *Client) actionPath(action string) string {
	return strings.TrimRight(c.base.EscapedPath(), "/") + "/api/v2/keys/" + url.PathEscape(c.cfg.RootKeyID) + "/actions/" + action
}
