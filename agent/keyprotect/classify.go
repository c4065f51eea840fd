package keyprotect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

// Class says what a Key Protect answer means for the node's lock.
type Class int

const (
	// OK: the answer is good.
	OK Class = iota
	// Transient: network trouble, 5xx, 429, timeouts. Retry with backoff;
	// the node keeps serving until the offline grace runs out.
	Transient
	// Authoritative: Key Protect or IAM said the key may not be used (key
	// disabled, deleted, not found, access removed, ciphertext refused).
	// Lock now.
	Authoritative
)

func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Transient:
		return "transient"
	case Authoritative:
		return "authoritative"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Verdict is the classification of one error.
type Verdict struct {
	Class Class
	// Reason is a short operator-facing phrase ("root key disabled").
	Reason string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

// rule is one row of the classification table: an HTTP status and, when
// set, a Key Protect reason code.
type rule struct {
	status int
	code   string
	class  Class
	reason string
}

// table maps Key Protect's answers to lock decisions. The first matching row
// wins; a row without a code matches any code for its status. Statuses not in
// the table fall back to: 5xx transient, other 4xx authoritative (fail
// closed: an answer we do not understand never keeps keys in memory).
var table = []rule{
	{http.StatusConflict, "KEY_ACTION_INVALID_STATE_ERR", Authoritative, "root key not active (disabled)"},
	{http.StatusConflict, "REQ_TOO_EARLY_ERR", Transient, "Key Protect asked to retry later"},
	{http.StatusGone, "", Authoritative, "root key deleted"},
	{http.StatusNotFound, "", Authoritative, "root key not found"},
	{http.StatusUnauthorized, "", Authoritative, "access to Key Protect removed (401)"},
	{http.StatusForbidden, "", Authoritative, "access to Key Protect forbidden (403)"},
	{http.StatusUnprocessableEntity, "UNPROCESSABLE_CIPHERTEXT_ERR", Authoritative, "wrapped key refused by the root key (wrong key, AAD or corrupt)"},
	{http.StatusBadRequest, "KEY_ROOT_REQ_ERR", Authoritative, "configured root key is a standard key"},
	{http.StatusBadRequest, "KEY_EXPIRED_ERR", Authoritative, "root key expired"},
	{http.StatusTooManyRequests, "", Transient, "Key Protect rate limit (429)"},
	{http.StatusRequestTimeout, "", Transient, "Key Protect request timeout (408)"},
}

// Classify maps an error from this package's calls to a lock decision.
// nil is OK.
func Classify(err error) Verdict {
	if err == nil {
		return Verdict{Class: OK}
	}
	var ra time.Duration
	var rae *retryAfterError
	if errors.As(err, &rae) {
		ra = rae.after
	}
	var iamErr *IAMError
	if errors.As(err, &iamErr) {
		v := classifyStatus(iamErr.Status, "")
		if iamErr.Status == http.StatusBadRequest || iamErr.Status == http.StatusUnauthorized {
			v = Verdict{Class: Authoritative, Reason: "API key rejected by IAM (" + iamErr.Code + ")"}
		}
		v.RetryAfter = ra
		return v
	}
	var kerr *kp.Error
	if errors.As(err, &kerr) {
		code := ""
		if len(kerr.Reasons) > 0 {
			code = kerr.Reasons[0].Code
		}
		v := classifyStatus(kerr.StatusCode, code)
		v.RetryAfter = ra
		return v
	}
	var se *StateError
	if errors.As(err, &se) {
		return Verdict{Class: Authoritative, Reason: se.Reason()}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Verdict{Class: Transient, Reason: "Key Protect request timed out", RetryAfter: ra}
	}
	var ne net.Error
	var ue *kp.URLError
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return Verdict{Class: Transient, Reason: "Key Protect unreachable", RetryAfter: ra}
	}
	// Anything else (a malformed answer, an error we did not foresee) is
	// treated as transient: it locks only when the offline grace runs out.
	return Verdict{Class: Transient, Reason: "unexpected Key Protect error", RetryAfter: ra}
}

func classifyStatus(status int, code string) Verdict {
	for _, r := range table {
		if r.status == status && (r.code == "" || r.code == code) {
			return Verdict{Class: r.class, Reason: r.reason}
		}
	}
	switch {
	case status >= 500:
		return Verdict{Class: Transient, Reason: fmt.Sprintf("Key Protect unavailable (%d)", status)}
	case status >= 400:
		r := fmt.Sprintf("Key Protect refused the request (%d", status)
		if code != "" {
			r += " " + code
		}
		return Verdict{Class: Authoritative, Reason: r + ")"}
	}
	return Verdict{Class: Transient, Reason: fmt.Sprintf("unexpected Key Protect status %d", status)}
}

// StateError reports a root key whose state forbids using it, as read from
// its metadata.
type StateError struct {
	KeyID string
	State int
}

// Reason is the operator-facing phrase for the state.
func (e *StateError) Reason() string {
	switch e.State {
	case StateSuspended:
		return "root key disabled"
	case StateDestroyed:
		return "root key deleted"
	case StateDeactivated:
		return "root key expired"
	case StatePreActive:
		return "root key not yet active"
	}
	return fmt.Sprintf("root key in unknown state %d", e.State)
}

func (e *StateError) Error() string {
	return fmt.Sprintf("root key %s: %s (state %d)", e.KeyID, e.Reason(), e.State)
}

// Key states as Key Protect numbers them.
const (
	StatePreActive   = 0
	StateActive      = 1
	StateSuspended   = 2
	StateDeactivated = 3
	StateDestroyed   = 5
)
