// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// IAMError is an error answer of the IAM token endpoint. It names IAM's error
// code, never the API key.
type IAMError struct {
	Status  int
	Code    string
	Message string
	// JSON reports whether the answer was IAM's JSON error shape (an
	// errorCode); a proxy's or load balancer's page is not.
	JSON       bool
	RetryAfter time.Duration
}

func (e *IAMError) Error() string {
	return fmt.Sprintf("iam token: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// tokenSource fetches and caches IAM access tokens for the API key, through
// byokd's own HTTP client (so the CA file and timeouts apply to IAM too).
type tokenSource struct {
	url    string
	apiKey string
	hc     *http.Client

	mu     sync.Mutex
	tok    string
	expiry time.Time
}

// token returns a cached token that is valid for at least another minute, or
// fetches one; fresh forces a fetch.
func (ts *tokenSource) token(ctx context.Context, fresh bool) (string, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if !fresh && ts.tok != "" && time.Until(ts.expiry) > time.Minute {
		return ts.tok, nil
	}
	form := url.Values{
		"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"},
		"apikey":     {ts.apiKey},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("iam token: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := ts.hc.Do(req)
	if err != nil {
		// The URL error names the endpoint, never the form body.
		return "", fmt.Errorf("iam token: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("iam token: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ie struct {
			ErrorCode    string `json:"errorCode"`
			ErrorMessage string `json:"errorMessage"`
		}
		_ = json.Unmarshal(body, &ie)
		e := &IAMError{Status: resp.StatusCode, Code: clip(ie.ErrorCode, 32), Message: clip(ie.ErrorMessage, 200), JSON: ie.ErrorCode != ""}
		if e.Code == "" {
			e.Code = "unknown"
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return "", e
	}
	var t struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return "", fmt.Errorf("iam token: malformed answer")
	}
	ts.tok = t.AccessToken
	ts.expiry = time.Now().Add(time.Duration(t.ExpiresIn) * time.Second)
	return ts.tok, nil
}
