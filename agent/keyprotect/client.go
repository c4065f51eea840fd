// Package keyprotect talks to IBM Key Protect for byokd — metadata, wrap and
// unwrap of the node key — and classifies every answer for the lock.
package keyprotect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
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
}

// Client calls Key Protect with a keep-alive transport of its own and IAM
// tokens fetched through the same transport.
type Client struct {
	cfg    Config
	kp     *kp.Client
	tokens *tokenSource
	hc     *http.Client
}

// KeyInfo is what byokd needs from the root key's metadata.
type KeyInfo struct {
	ID          string
	State       int
	Version     string
	Expiration  *time.Time
	Extractable bool
}

// New builds a client; it does not contact Key Protect.
func New(cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	tr, err := transport(cfg)
	if err != nil {
		return nil, err
	}
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
	return &Client{cfg: cfg, kp: c, hc: hc, tokens: &tokenSource{url: cfg.TokenURL, apiKey: cfg.APIKey, hc: hc}}, nil
}

func transport(cfg Config) (*retryAfterTransport, error) {
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
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
	return &retryAfterTransport{base: base}, nil
}

// retryAfterTransport records the Retry-After of a 429 or 503 answer into a
// holder the caller put in the request's context: the client's error type
// does not carry response headers.
type retryAfterTransport struct{ base http.RoundTripper }

type retryAfterKey struct{}

type retryAfterHolder struct {
	mu    sync.Mutex
	after time.Duration
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if h, ok := req.Context().Value(retryAfterKey{}).(*retryAfterHolder); ok {
			if d := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); d > 0 {
				h.mu.Lock()
				h.after = d
				h.mu.Unlock()
			}
		}
	}
	return resp, err
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// call runs fn with an IAM token and a Retry-After holder in its context; a
// 401 is retried once with a fresh token, since our cached one may have just
// expired on the server's clock.
func (c *Client) call(ctx context.Context, fn func(ctx context.Context) error) error {
	holder := &retryAfterHolder{}
	ctx = context.WithValue(ctx, retryAfterKey{}, holder)
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var tok string
		tok, err = c.tokens.token(ctx, attempt > 0)
		if err != nil {
			break
		}
		err = fn(kp.NewContextWithAuth(ctx, "Bearer "+tok))
		var kerr *kp.Error
		if !errors.As(err, &kerr) || kerr.StatusCode != http.StatusUnauthorized {
			break
		}
	}
	holder.mu.Lock()
	after := holder.after
	holder.mu.Unlock()
	if err != nil && after > 0 {
		return &retryAfterError{err: err, after: after}
	}
	return err
}

// Metadata reads the root key's metadata (never its material).
func (c *Client) Metadata(ctx context.Context) (*KeyInfo, error) {
	var k *kp.Key
	err := c.call(ctx, func(ctx context.Context) error {
		var err error
		k, err = c.kp.GetKeyMetadata(ctx, c.cfg.RootKeyID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read root key %s metadata: %w", c.cfg.RootKeyID, err)
	}
	info := &KeyInfo{ID: k.ID, State: k.State, Expiration: k.Expiration, Extractable: k.Extractable}
	if k.KeyVersion != nil {
		info.Version = k.KeyVersion.ID
	}
	return info, nil
}

// CheckUsable turns a key's metadata into an error when its state forbids
// use: disabled, deleted, not yet active. An expired (deactivated) key still
// unwraps in Key Protect; the caller decides (lock_on_expired).
func CheckUsable(info *KeyInfo) error {
	switch info.State {
	case StateActive, StateDeactivated:
		return nil
	}
	return &StateError{KeyID: info.ID, State: info.State}
}

// Unwrap has Key Protect unwrap the wrapped DEK. rewrapped is non-empty when
// the root key was rotated since the DEK was wrapped: the DEK wrapped under
// the newest version, to be stored. The caller owns dek and must wipe it.
func (c *Client) Unwrap(ctx context.Context, ciphertext string, aad []string) (dek []byte, rewrapped string, err error) {
	var pt, re []byte
	err = c.call(ctx, func(ctx context.Context) error {
		var err error
		pt, re, err = c.kp.UnwrapV2(ctx, c.cfg.RootKeyID, []byte(ciphertext), &aad)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("unwrap with root key %s: %w", c.cfg.RootKeyID, err)
	}
	dek, derr := decodeDEK(pt)
	clear(pt)
	if derr != nil {
		return nil, "", fmt.Errorf("unwrap with root key %s: %w", c.cfg.RootKeyID, derr)
	}
	return dek, string(re), nil
}

// WrapNew has Key Protect create a new 256-bit DEK and wrap it under the root
// key. The caller owns dek and must wipe it.
func (c *Client) WrapNew(ctx context.Context, aad []string) (dek []byte, ciphertext, version string, err error) {
	var res *kp.KeyActionResponse
	err = c.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = c.kp.WrapCreateDEKV2(ctx, c.cfg.RootKeyID, &aad)
		return err
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("create a data encryption key with root key %s: %w", c.cfg.RootKeyID, err)
	}
	pt := []byte(res.PlainText)
	dek, derr := decodeDEK(pt)
	clear(pt)
	if derr != nil {
		return nil, "", "", fmt.Errorf("create a data encryption key: %w", derr)
	}
	if res.KeyVersion != nil {
		version = res.KeyVersion.ID
	}
	return dek, res.CipherText, version, nil
}

func decodeDEK(b64 []byte) ([]byte, error) {
	dek := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(dek, b64)
	if err != nil || n != 32 {
		clear(dek)
		return nil, errors.New("key protect returned a data encryption key that is not 32 bytes of base64")
	}
	return dek[:n], nil
}

// Close drops idle connections.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}
