// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

const moreInfo = "https://cloud.ibm.com/apidocs/key-protect"

// apiError is one error answer of the Key Protect API. Its JSON form is the
// service's: metadata with the error collection type, and one resource
// carrying errorMsg and reasons.
type apiError struct {
	status int
	msg    string // the resources[0].errorMsg text
	code   string // reason code; empty for answers the service sends without reasons
	reason string // reason message
	target *errorTarget
	header [][2]string
}

type errorReason struct {
	Code     string       `json:"code"`
	Message  string       `json:"message"`
	Status   int          `json:"status"`
	MoreInfo string       `json:"moreInfo"`
	Target   *errorTarget `json:"target,omitempty"`
}

// errorTarget names the field, query parameter or header an error is about.
type errorTarget struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

type errorResource struct {
	ErrorMsg string        `json:"errorMsg"`
	Reasons  []errorReason `json:"reasons,omitempty"`
}

type errorBody struct {
	Metadata  collectionMeta  `json:"metadata"`
	Resources []errorResource `json:"resources"`
}

type collectionMeta struct {
	CollectionType  string `json:"collectionType"`
	CollectionTotal int    `json:"collectionTotal"`
	TotalCount      *int   `json:"totalCount,omitempty"`
}

const (
	typeError        = "application/vnd.ibm.kms.error+json"
	typeKey          = "application/vnd.ibm.kms.key+json"
	typeAlias        = "application/vnd.ibm.kms.alias+json"
	typeKeyVersion   = "application/vnd.ibm.kms.key_version+json"
	typeRegistration = "application/vnd.ibm.kms.registration+json"
)

func (e *apiError) Error() string { return e.msg }

func (e *apiError) body() errorBody {
	res := errorResource{ErrorMsg: e.msg}
	if e.code != "" {
		res.Reasons = []errorReason{{Code: e.code, Message: e.reason, Status: e.status, MoreInfo: moreInfo, Target: e.target}}
	}
	return errorBody{
		Metadata:  collectionMeta{CollectionType: typeError, CollectionTotal: 1},
		Resources: []errorResource{res},
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	for _, h := range e.header {
		w.Header().Set(h[0], h[1])
	}
	writeJSON(w, e.status, e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value written here is built from plain structs; a marshal
		// failure is a bug, answered as the service answers its own bugs.
		status = http.StatusInternalServerError
		b = []byte(`{"metadata":{"collectionType":"` + typeError + `","collectionTotal":1},"resources":[{"errorMsg":"Internal Server Error"}]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// statusPrefix is the first words of errorMsg: the service starts every
// errorMsg with the status text ("Conflict: ...").
func statusPrefix(status int) string {
	if status == http.StatusUnprocessableEntity {
		return "Unprocessable Entity"
	}
	return http.StatusText(status)
}

// reasonErr builds the common answer "<Status>: <what> could not be <done>:
// Please see `reasons` for more details (<CODE>)".
func reasonErr(status int, what, code, reason string) *apiError {
	return &apiError{
		status: status,
		msg:    statusPrefix(status) + ": " + what + ": Please see `reasons` for more details (" + code + ")",
		code:   code,
		reason: reason,
	}
}

// Reason messages as the service documents them.
const (
	msgBadBody         = "Invalid body data was passed: Please ensure the data passed had valid formatting with no invalid characters"
	msgNoBody          = "Missing body in request"
	msgKeyNotFound     = "key does not exist"
	msgKeyDeleted      = "Key has already been deleted: Please delete references to this key"
	msgInvalidState    = "Key is not in a valid state"
	msgRootRequired    = "Requested action can only be completed with a root key"
	msgHSM             = "The provided ciphertext is invalid or corrupted"
	msgCiphertextMust  = "the original base64 encoded ciphertext from the wrap operation"
	msgTooEarly        = "The key was updated recently: Please wait and try again"
	msgRotateTooSoon   = "This root key has been rotated within the last hour: Only one 'rotate' action per hour is permitted"
	msgPayloadRequired = "This root key was created with user-supplied key material: Key material is required to perform a 'rotate' action"
	msgRestoreExpired  = "Key restoration has expired"
	msgKeyExpired      = "The action could not be performed on the key because the key is expired"
	msgQueryParam      = "Invalid query parameter was passed"
	msgUnauthorized    = "Unauthorized: The user does not have access to the specified resource"
	msgWrongRegion     = "Unauthorized: Either the user does not have access to the specified resource, the resource does not exist, or the region is incorrectly set"
	msgFeature         = "This action is not permitted on this resource: Please contact IBM Key Protect or open a service ticket to enable this feature"
	msgProtected       = "Key is protecting one or more cloud resources"
	msgPrevKeyDel      = "The key cannot be deleted because it's protecting a cloud resource that has a retention policy: Before you delete this key, contact an account owner to remove the retention policy on each resource that is associated with the key"
	msgAuthsNotMet     = "Number of authorizations required to delete is not met"
	msgAuthFailed      = "The key cannot be deleted because it failed the dual authorization request"
	msgNotDualAuth     = "The key is not dual auth enabled and cannot be set for deletion"
)

func errUnauthorized() *apiError {
	return &apiError{status: http.StatusUnauthorized, msg: msgUnauthorized}
}

func errBadInstance() *apiError {
	return &apiError{status: http.StatusBadRequest, msg: "Bad Request: Request requires valid Bluemix-Instance Header containing a valid UUID"}
}

func errBearer() *apiError {
	return reasonErr(http.StatusBadRequest, "Request could not be authenticated", "BEARER_SUB_EXTRACTION_ERR",
		"Extracting the subject from the bearer token failed: Make sure the bearer token passed is the correct one (and correct format) and is allowed to perform requested actions")
}

func errBadBody(what, detail string) *apiError {
	r := msgBadBody
	if detail != "" {
		r += ": " + detail
	}
	return reasonErr(http.StatusBadRequest, what, "BAD_BODY_ERR", r)
}

func errNoBody(what string) *apiError {
	return reasonErr(http.StatusBadRequest, what, "NO_BODY_ERR", msgNoBody)
}

func errNotFound(what string) *apiError {
	return reasonErr(http.StatusNotFound, what, "KEY_NOT_FOUND_ERR", msgKeyNotFound)
}

func errDeleted(what string) *apiError {
	return reasonErr(http.StatusGone, what, "KEY_DELETED_ERR", msgKeyDeleted)
}

func errInvalidState(what string) *apiError {
	return reasonErr(http.StatusConflict, what, "KEY_ACTION_INVALID_STATE_ERR", msgInvalidState)
}

func errRootRequired(what string) *apiError {
	return reasonErr(http.StatusBadRequest, what, "KEY_ROOT_REQ_ERR", msgRootRequired)
}

// errCiphertext is the service's answer to a ciphertext that does not
// unwrap: the wrong key, the wrong AAD, a damaged or undecodable envelope
// (error-messages.md, "Invalid field error", the unwrap sample).
func errCiphertext(what string) *apiError {
	return errFieldMust(what, "ciphertext", msgCiphertextMust)
}

// errHSM is 422 UNPROCESSABLE_CIPHERTEXT_ERR, which the service documents as
// an internal error of its HSM ("contact IBM support"), not as a verdict on
// the ciphertext. kpemu sends it only as the "hsm" refusal fault.
func errHSM(what string) *apiError {
	return reasonErr(http.StatusUnprocessableEntity, what, "UNPROCESSABLE_CIPHERTEXT_ERR", msgHSM)
}

// errWrongRegion is the 401 a token of another account, an instance that
// does not exist or the wrong region's endpoint gets (migrate-tool.md).
func errWrongRegion() *apiError {
	return &apiError{status: http.StatusUnauthorized, msg: msgWrongRegion}
}

// errFeatureRestricted is 403 FEATURE_RESTRICTED_ERR, as an IPv6 client of an
// instance with an allowed-IP policy gets (error-messages.md).
func errFeatureRestricted() *apiError {
	return reasonErr(http.StatusForbidden, "Request could not be processed", "FEATURE_RESTRICTED_ERR", msgFeature)
}

func errTooEarly(what string) *apiError {
	return reasonErr(http.StatusConflict, what, "REQ_TOO_EARLY_ERR", msgTooEarly)
}

func errQueryParam(what, detail string) *apiError {
	return reasonErr(http.StatusBadRequest, what, "INVALID_QUERY_PARAM_ERR", msgQueryParam+": "+detail)
}

func errField(what, detail string) *apiError {
	return reasonErr(http.StatusBadRequest, what, "INVALID_FIELD_ERR", "The field is invalid: "+detail)
}

// errFieldMust is the service's INVALID_FIELD_ERR for one named field:
// "The field `plaintext` must be: a base64 encoded key material".
func errFieldMust(what, field, must string) *apiError {
	e := reasonErr(http.StatusBadRequest, what, "INVALID_FIELD_ERR", "The field `"+field+"` must be: "+must)
	e.target = &errorTarget{Type: "field", Name: field}
	return e
}

func errTooLarge() *apiError {
	return reasonErr(http.StatusRequestEntityTooLarge, "Request could not be processed", "BODY_TOO_LARGE_ERR",
		"The request body is larger than the maximum of "+strconv.Itoa(maxBody)+" bytes")
}

func errRoute(status int) *apiError {
	if status == http.StatusMethodNotAllowed {
		return reasonErr(status, "Request could not be processed", "METHOD_NOT_ALLOWED_ERR", "The method is not allowed on this resource")
	}
	return reasonErr(http.StatusNotFound, "Resource could not be found", "NOT_FOUND_ERR", "The requested resource does not exist")
}

func errServer(status int) *apiError {
	return reasonErr(status, "Request could not be processed", "INTERNAL_SERVER_ERR",
		"This operation cannot be completed. Please try your request at a later time. If the issue persists, please contact IBM Key Protect")
}

func errThrottled(retryAfter string) *apiError {
	e := reasonErr(http.StatusTooManyRequests, "Request could not be processed", "TOO_MANY_REQUESTS_ERR",
		"Too many requests: Please wait and try again")
	e.header = [][2]string{{"Retry-After", retryAfter}}
	return e
}

// what names the object and the failed verb the way the service's errorMsg
// does: "Key could not be deleted", "Unwrap with key could not be performed".
func what(op string) string {
	switch op {
	case "wrap", "unwrap", "rewrap":
		return strings.ToUpper(op[:1]) + op[1:] + " with key could not be performed"
	case "rotate", "disable", "enable", "restore", "purge", "delete", "create", "retrieve":
		past := map[string]string{
			"rotate": "rotated", "disable": "disabled", "enable": "enabled", "restore": "restored",
			"purge": "purged", "delete": "deleted", "create": "created", "retrieve": "retrieved",
		}[op]
		return "Key could not be " + past
	}
	return "Action could not be performed on key"
}
