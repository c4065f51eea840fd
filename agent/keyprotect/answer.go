// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// errorCollectionType is the metadata.collectionType of every error Key
// Protect itself answers. A 4xx without it came from something in front of
// Key Protect — a proxy, a load balancer, a firewall — and says nothing
// about the root key.
const errorCollectionType = "application/vnd.ibm.kms.error+json"

// APIError is an error answer to one Key Protect call, from Key Protect or
// from whatever answered in its place. It carries what classification
// needs and never a response body: Message is Key Protect's own errorMsg,
// clipped, or empty.
type APIError struct {
	// Op is the call: "metadata", "unwrap" or "wrap".
	Op     string
	Status int
	// KeyProtect reports whether the body was Key Protect's error shape.
	KeyProtect bool
	// Code is the first reason's code (KEY_ACTION_INVALID_STATE_ERR, ...).
	Code string
	// Target is the first reason's target name (a field, header or query
	// parameter), when it has one.
	Target string
	// Message is Key Protect's errorMsg, at most 200 bytes.
	Message string
	// ContentType is the answer's media type, for answers that were not
	// Key Protect's.
	ContentType   string
	CorrelationID string
	RetryAfter    time.Duration
	// Refresh is why no fresh IAM token could be had to retry a 401; the
	// 401 stands either way.
	Refresh error
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.Status)
	switch {
	case !e.KeyProtect:
		fmt.Fprintf(&b, " not from Key Protect (%s)", orNone(e.ContentType))
	case e.Code != "":
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.CorrelationID != "" {
		fmt.Fprintf(&b, " (correlation id %s)", e.CorrelationID)
	}
	if e.Refresh != nil {
		fmt.Fprintf(&b, "; a fresh token could not be had either: %v", e.Refresh)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "no content type"
	}
	return s
}

// kpErrorBody is Key Protect's error shape.
type kpErrorBody struct {
	Metadata struct {
		CollectionType string `json:"collectionType"`
	} `json:"metadata"`
	Resources []struct {
		ErrorMsg string `json:"errorMsg"`
		Reasons  []struct {
			Code   string `json:"code"`
			Target *struct {
				Name string `json:"name"`
			} `json:"target"`
		} `json:"reasons"`
	} `json:"resources"`
}

// newAPIError builds the error for a non-2xx answer from its status,
// headers and body. The body is read only for Key Protect's error shape.
func newAPIError(op string, status int, header http.Header, body []byte, now time.Time) *APIError {
	e := &APIError{Op: op, Status: status, CorrelationID: clip(header.Get("correlation-id"), 64)}
	if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err == nil {
		e.ContentType = clip(mt, 64)
	}
	var kb kpErrorBody
	if json.Unmarshal(body, &kb) == nil && kb.Metadata.CollectionType == errorCollectionType {
		e.KeyProtect = true
		if len(kb.Resources) > 0 {
			r := kb.Resources[0]
			e.Message = clip(r.ErrorMsg, 200)
			if len(r.Reasons) > 0 {
				e.Code = clip(r.Reasons[0].Code, 64)
				if r.Reasons[0].Target != nil {
					e.Target = clip(r.Reasons[0].Target.Name, 64)
				}
			}
		}
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), now)
	}
	return e
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

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
