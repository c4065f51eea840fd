// SPDX-License-Identifier: Apache-2.0

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

// Class says what an answer means for the node's lock. The rows of table
// and the rules in Classify decide it; docs/operations.md lists them for
// operators, and the notes on the real service's answers are in
// shared/notes/keyprotect.md.
type Class int

const (
	// OK: the answer is good.
	OK Class = iota
	// Transient: network trouble, 5xx, 429, timeouts, and answers that did
	// not come from Key Protect. Retry with backoff; the node keeps serving
	// until the offline grace runs out.
	Transient
	// KeyState: Key Protect said the root key may not be used — disabled,
	// deleted, purged, not a root key — or refused the request in its own
	// error shape for a reason byokd does not know. Lock at once; unlock
	// when the key is usable again.
	KeyState
	// Access: Key Protect (401, 403) or IAM refused the caller. That is
	// what removed access says, but also what a network policy, a
	// context-based restriction being rolled out, a changed egress address
	// or a wrong region say, on every node at once: keep serving and lock
	// only when the refusal persists over the confirmation window.
	Access
	// Internal: Key Protect reported an internal error of its HSM (422).
	// Like Access, it locks only when it persists over the confirmation
	// window.
	Internal
	// Refused: Key Protect refused the stored wrapped key itself (400
	// INVALID_FIELD_ERR on unwrap: another key's ciphertext, another AAD,
	// damaged). Lock, and stay locked until the stored key changes or an
	// operator acts: the same request will never succeed.
	Refused
)

func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Transient:
		return "transient"
	case KeyState:
		return "key-state"
	case Access:
		return "access"
	case Internal:
		return "internal"
	case Refused:
		return "refused"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Verdict is the classification of one error.
type Verdict struct {
	Class Class
	// Reason is a short operator-facing phrase ("root key disabled").
	Reason string
	// Cause is a fixed token for metrics and scripts ("key-disabled").
	Cause string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

// rule is one row of the classification table: an HTTP status, and when
// set a Key Protect reason code, the field it is about and the operation.
// Answers in Key Protect's error shape reach the table; of the others only
// 429 and 408, which mean the same whoever sends them.
type rule struct {
	status int
	code   string // "" matches any code
	target string // "" matches any target
	op     string // "" matches any operation
	class  Class
	cause  string
	reason string
}

// table maps Key Protect's own error answers to lock decisions; the first
// matching row wins. A Key Protect 4xx that no row names is KeyState (fail
// closed: an answer of Key Protect's we do not understand never keeps keys
// in memory), a 5xx Transient.
var table = []rule{
	{http.StatusConflict, "KEY_ACTION_INVALID_STATE_ERR", "", "", KeyState, "key-disabled", "root key not active (disabled)"},
	{http.StatusConflict, "REQ_TOO_EARLY_ERR", "", "", Transient, "too-early", "Key Protect asked to retry later (409 REQ_TOO_EARLY_ERR)"},
	{http.StatusGone, "", "", "", KeyState, "key-deleted", "root key deleted"},
	{http.StatusNotFound, "KEY_NOT_FOUND_ERR", "", "", KeyState, "key-not-found", "root key not found (purged, or not in this instance or key ring)"},
	{http.StatusUnauthorized, "", "", "", Access, "access-refused", "Key Protect refused access (401)"},
	{http.StatusForbidden, "FEATURE_RESTRICTED_ERR", "", "", Access, "access-refused", "Key Protect refused the request (403 FEATURE_RESTRICTED_ERR: an allowed-IP policy refuses IPv6 clients)"},
	{http.StatusForbidden, "", "", "", Access, "access-refused", "Key Protect forbade the request (403)"},
	{http.StatusUnprocessableEntity, "", "", "", Internal, "kp-internal-error", "Key Protect internal error (422)"},
	{http.StatusBadRequest, "INVALID_FIELD_ERR", "ciphertext", "unwrap", Refused, "wrapped-key-refused", "the stored wrapped key was refused by the root key (another key's, another cluster's, or damaged)"},
	{http.StatusBadRequest, "KEY_ROOT_REQ_ERR", "", "", KeyState, "key-not-root", "configured root key is a standard key"},
	{http.StatusBadRequest, "KEY_EXPIRED_ERR", "", "", KeyState, "key-expired", "root key expired"},
	{http.StatusTooManyRequests, "", "", "", Transient, "rate-limited", "Key Protect rate limit (429)"},
	{http.StatusRequestTimeout, "", "", "", Transient, "timeout", "Key Protect request timeout (408)"},
}

// accessCauses is what an operator reads when access refusals lock the
// node: every cause the real service answers that way.
const accessCauses = "access to the root key removed (IAM policy, service ID or API key), a network policy " +
	"(allowed IPs, private-only endpoint, context-based restriction), or a wrong region, instance or key ring"

// AccessCauses lists what an access refusal (401, 403) can mean.
func AccessCauses() string { return accessCauses }

// Classify maps an error from this package's calls to a lock decision.
// nil is OK.
func Classify(err error) Verdict {
	if err == nil {
		return Verdict{Class: OK, Cause: "ok"}
	}
	var ae *APIError
	if errors.As(err, &ae) {
		v := classifyAnswer(ae)
		v.RetryAfter = ae.RetryAfter
		return v
	}
	var iamErr *IAMError
	if errors.As(err, &iamErr) {
		switch {
		case iamErr.Status == http.StatusTooManyRequests || iamErr.Status >= 500:
			return Verdict{Class: Transient, Cause: "iam-unavailable", Reason: fmt.Sprintf("IAM unavailable (%d)", iamErr.Status), RetryAfter: iamErr.RetryAfter}
		case iamErr.Status >= 400 && iamErr.JSON:
			return Verdict{Class: Access, Cause: "iam-refused", Reason: "IAM refused the API key (" + iamErr.Code + ")"}
		default:
			return Verdict{Class: Transient, Cause: "foreign-answer",
				Reason: fmt.Sprintf("an answer that did not come from IAM (HTTP %d): a proxy, load balancer or firewall in between", iamErr.Status)}
		}
	}
	var se *StateError
	if errors.As(err, &se) {
		return Verdict{Class: KeyState, Cause: se.cause(), Reason: se.Reason()}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Verdict{Class: Transient, Cause: "timeout", Reason: "Key Protect request timed out"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Verdict{Class: Transient, Cause: "timeout", Reason: "Key Protect request timed out"}
	}
	var oe *net.OpError
	var ue *kp.URLError
	if errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &ue) {
		return Verdict{Class: Transient, Cause: "unreachable", Reason: "Key Protect unreachable"}
	}
	// Anything else (a malformed answer, an error we did not foresee) is
	// treated as transient: it locks only when the offline grace runs out.
	return Verdict{Class: Transient, Cause: "unexpected", Reason: "unexpected Key Protect error"}
}

func classifyAnswer(ae *APIError) Verdict {
	if ae.Status >= 500 {
		return Verdict{Class: Transient, Cause: "unavailable", Reason: fmt.Sprintf("Key Protect unavailable (%d)", ae.Status)}
	}
	if !ae.KeyProtect {
		if ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusRequestTimeout {
			r, _ := matchRule(ae)
			return Verdict{Class: r.class, Cause: r.cause, Reason: r.reason}
		}
		what := ae.ContentType
		if what == "" {
			what = "no body"
		}
		return Verdict{Class: Transient, Cause: "foreign-answer",
			Reason: fmt.Sprintf("an answer that did not come from Key Protect (HTTP %d, %s): a proxy, load balancer or firewall in between", ae.Status, what)}
	}
	if r, ok := matchRule(ae); ok {
		return Verdict{Class: r.class, Cause: r.cause, Reason: r.reason}
	}
	if ae.Status >= 400 {
		reason := fmt.Sprintf("Key Protect refused the request (%d", ae.Status)
		if ae.Code != "" {
			reason += " " + ae.Code
		}
		return Verdict{Class: KeyState, Cause: "refused-4xx", Reason: reason + ")"}
	}
	return Verdict{Class: Transient, Cause: "unexpected", Reason: fmt.Sprintf("unexpected Key Protect status %d", ae.Status)}
}

func matchRule(ae *APIError) (rule, bool) {
	for _, r := range table {
		if r.status == ae.Status && (r.code == "" || r.code == ae.Code) && (r.target == "" || r.target == ae.Target) &&
			(r.op == "" || r.op == ae.Op) {
			return r, true
		}
	}
	return rule{}, false
}

// StateError reports a root key whose state forbids using it, as read from
// its metadata.
type StateError struct {
	KeyID   string
	State   int
	Deleted bool // metadata said deleted: true, whatever the state
}

// Reason is the operator-facing phrase for the state.
func (e *StateError) Reason() string {
	if e.Deleted {
		return "root key deleted"
	}
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

func (e *StateError) cause() string {
	switch {
	case e.Deleted || e.State == StateDestroyed:
		return "key-deleted"
	case e.State == StateSuspended:
		return "key-disabled"
	case e.State == StateDeactivated:
		return "key-expired"
	}
	return "key-not-active"
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
