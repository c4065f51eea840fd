// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"
)

const (
	maxPlaintext = 7168 // bytes of a DEK a client may wrap
	maxAAD       = 255  // entries, and characters per entry
)

// actionRequest is the body of a key action.
type actionRequest struct {
	Plaintext  string   `json:"plaintext"`
	Ciphertext string   `json:"ciphertext"`
	AAD        []string `json:"aad"`
	Payload    string   `json:"payload"`
	// Secure import fields: refused, kpemu has no import tokens.
	EncryptedNonce string `json:"encryptedNonce"`
	IV             string `json:"iv"`
}

type actionResponse struct {
	Plaintext           string       `json:"plaintext,omitempty"`
	Ciphertext          string       `json:"ciphertext,omitempty"`
	KeyVersion          *versionJSON `json:"keyVersion,omitempty"`
	RewrappedKeyVersion *versionJSON `json:"rewrappedKeyVersion,omitempty"`
}

// decodeAction parses a key action body. It does not touch the emulator's
// state, so it can be fuzzed alone. plaintext is nil when none was sent.
func decodeAction(action string, body []byte) (req actionRequest, plaintext []byte, e *apiError) {
	w := what(action)
	if body == nil {
		switch action {
		case "unwrap", "rewrap":
			return req, nil, errNoBody(w)
		}
		return req, nil, nil
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, nil, errBadBody(w, "the body is not valid JSON")
	}
	if len(req.AAD) > maxAAD {
		return req, nil, errBadBody(w, "aad may hold at most 255 entries")
	}
	for _, a := range req.AAD {
		if len(a) > maxAAD {
			return req, nil, errBadBody(w, "each aad entry may hold at most 255 characters")
		}
	}
	switch action {
	case "wrap":
		if req.Plaintext != "" {
			p, err := base64.StdEncoding.DecodeString(req.Plaintext)
			if err != nil {
				return req, nil, errFieldMust(w, "plaintext", "a base64 encoded key material: "+err.Error())
			}
			if len(p) == 0 || len(p) > maxPlaintext {
				return req, nil, errFieldMust(w, "plaintext", "a key material of 1 to 7168 bytes")
			}
			plaintext = p
		}
	case "unwrap", "rewrap":
		if req.Ciphertext == "" {
			return req, nil, errFieldMust(w, "ciphertext", msgCiphertextMust)
		}
		if _, err := base64.StdEncoding.DecodeString(req.Ciphertext); err != nil {
			return req, nil, errFieldMust(w, "ciphertext", msgCiphertextMust+": "+err.Error())
		}
	case "rotate":
		if req.EncryptedNonce != "" || req.IV != "" {
			return req, nil, errBadBody(w, "rotation with an import token (encryptedNonce, iv) is not supported by kpemu")
		}
		if req.Payload != "" {
			p, err := base64.StdEncoding.DecodeString(req.Payload)
			if err != nil || (len(p) != 16 && len(p) != 24 && len(p) != 32) {
				return req, nil, errFieldMust(w, "payload", "a base64 encoded 128, 192 or 256-bit key material")
			}
			plaintext = p
		}
	}
	return req, plaintext, nil
}

func (s *Server) keyAction(r *http.Request, now time.Time) result {
	action := r.PathValue("action")
	if action == "" {
		action = r.URL.Query().Get("action")
	}
	if !knownActions[action] || action == "restore" {
		return fail(errQueryParam(what(""), "unknown action"))
	}
	body, e := readBody(r)
	if e != nil {
		return fail(e)
	}
	req, plaintext, e := decodeAction(action, body)
	if e != nil {
		return fail(e)
	}
	switch action {
	case "wrap", "unwrap", "rewrap":
		return s.cryptoAction(r, now, action, req, plaintext)
	}
	return s.stateAction(r, now, action, plaintext)
}

// usable checks that k may be used for a cryptographic action: deleted keys
// are gone, only root keys wrap, and the key state must allow the action
// (wrap only when active; unwrap and rewrap also when deactivated).
func usable(k *key, action string, now time.Time) *apiError {
	w := what(action)
	if k.Deleted != nil {
		return errDeleted(w)
	}
	if !k.root() {
		return errRootRequired(w)
	}
	switch st := k.effectiveState(now); {
	case st == stateActive:
	case st == stateDeactivated && action != "wrap":
	default:
		return errInvalidState(w)
	}
	return nil
}

func (s *Server) cryptoAction(r *http.Request, now time.Time, action string, req actionRequest, plaintext []byte) result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.lookup(r, r.PathValue("id"), action)
	if e != nil {
		return fail(e)
	}
	if e := usable(k, action, now); e != nil {
		return fail(e)
	}
	latest := k.latest()
	lc := latest.Created
	latestJSON := &versionJSON{ID: latest.ID, CreationDate: &lc}
	if action == "wrap" {
		resp := actionResponse{KeyVersion: latestJSON}
		if plaintext == nil {
			dek := randomBytes(32)
			resp.Plaintext = base64.StdEncoding.EncodeToString(dek)
			plaintext = dek
		}
		resp.Ciphertext = seal(k.ID, latest, plaintext, req.AAD)
		return ok(http.StatusOK, resp)
	}
	env, ct, iv, err := parseEnvelope(req.Ciphertext)
	if err != nil {
		return fail(errCiphertext(what(action)))
	}
	v := k.version(env.Handle)
	if v == nil {
		return fail(errCiphertext(what(action)))
	}
	pt, err := open(k.ID, v, ct, iv, req.AAD)
	if err != nil {
		return fail(errCiphertext(what(action)))
	}
	vc := v.Created
	usedJSON := &versionJSON{ID: v.ID, CreationDate: &vc}
	if action == "rewrap" {
		return ok(http.StatusOK, actionResponse{
			Ciphertext:          seal(k.ID, latest, pt, req.AAD),
			KeyVersion:          usedJSON,
			RewrappedKeyVersion: latestJSON,
		})
	}
	resp := actionResponse{Plaintext: base64.StdEncoding.EncodeToString(pt), KeyVersion: usedJSON}
	if v.ID != latest.ID {
		// Made under an older version: the service hands back the DEK
		// wrapped under the newest version too, for the caller to store.
		resp.Ciphertext = seal(k.ID, latest, pt, req.AAD)
		resp.RewrappedKeyVersion = latestJSON
	}
	clear(pt)
	return ok(http.StatusOK, resp)
}

func (s *Server) stateAction(r *http.Request, now time.Time, action string, payload []byte) result {
	w := what(action)
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), action)
	if e != nil {
		return fail(e)
	}
	if action == "sync" {
		// Sync re-sends the last lifecycle event, a delete too
		// (sync-resources.md), so a deleted key may be synced.
		return s.syncKey(k, now)
	}
	if k.Deleted != nil {
		return fail(errDeleted(w))
	}
	st := k.effectiveState(now)
	if action == "setKeyForDeletion" || action == "unsetKeyForDeletion" {
		return s.authorizeDeletion(r, k, action, st, now)
	}
	if !k.root() {
		return fail(errRootRequired(w))
	}
	switch action {
	case "rotate":
		switch {
		case st != stateActive && st != stateDeactivated:
			return fail(errInvalidState(w))
		case k.Imported && payload == nil:
			e := reasonErr(http.StatusBadRequest, w, "KEY_PAYLOAD_REQ_ERR", msgPayloadRequired)
			e.target = &errorTarget{Type: "field", Name: "payload"}
			return fail(e)
		case !k.Imported && payload != nil:
			e := reasonErr(http.StatusBadRequest, w, "INVALID_QUERY_PARAM_ERR", "The query_param 'payload' must be: provided only if key is imported")
			e.target = &errorTarget{Type: "query_param", Name: "payload"}
			return fail(e)
		case s.cfg.RotateCooldown > 0 && k.Rotated != nil && now.Sub(*k.Rotated) < s.cfg.RotateCooldown:
			return fail(reasonErr(http.StatusConflict, w, "KEY_ROTATION_NOT_PERMITTED", msgRotateTooSoon))
		}
		if payload == nil {
			payload = randomBytes(32)
		}
		t := now
		k.Versions = append(k.Versions, version{ID: newUUID(), Created: now, Material: payload})
		k.Rotated = &t
		k.touch(now)
		k.notify(now)
	case "disable":
		if st != stateActive {
			e := errInvalidState(w)
			e.msg = "Conflict: Key is not in active state: " + w + ". Please see `reasons` for more details."
			return fail(e)
		}
		k.State, k.Changed = stateSuspended, now
		k.touch(now)
		k.notify(now)
	case "enable":
		if st != stateSuspended {
			e := errInvalidState(w)
			e.msg = "Conflict: Key is not in suspended state: " + w + ". Please see `reasons` for more details."
			return fail(e)
		}
		if s.cfg.ActionCooldown > 0 && now.Sub(k.Changed) < s.cfg.ActionCooldown {
			return fail(errTooEarly(w))
		}
		k.State, k.Changed = stateActive, now
		k.touch(now)
		k.notify(now)
	}
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusNoContent, nil)
}

// syncWait is how long after a key's last notification of its registered
// services a sync is refused (sync-resources.md).
const syncWait = time.Hour

// syncKey asks the key's registered services to act on its last lifecycle
// event again: 204, or 409 REQ_TOO_EARLY_ERR within an hour of the last
// notification (a rotate, restore, disable, enable, delete or sync). s.mu
// must be held for writing.
func (s *Server) syncKey(k *key, now time.Time) result {
	if k.Notified != nil && now.Sub(*k.Notified) < syncWait {
		until := k.Notified.Add(syncWait).UTC().Format(time.RFC3339)
		return fail(reasonErr(http.StatusConflict, "Could not initiate sync requests to associated resources", "REQ_TOO_EARLY_ERR",
			msgTooEarly+": Sync cannot be performed until at least "+until))
	}
	k.notify(now)
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusNoContent, nil)
}

// authorizeDeletion gives (setKeyForDeletion) or withdraws
// (unsetKeyForDeletion) the first authorization to delete a key with a dual
// authorization policy: the delete must then come from another identity
// within 7 days (manage-dual-auth.md). s.mu must be held for writing.
func (s *Server) authorizeDeletion(r *http.Request, k *key, action string, st int, now time.Time) result {
	w := what(action)
	if !k.dualAuth() {
		return fail(reasonErr(http.StatusConflict, w, "NOT_DUAL_AUTH_ERR", msgNotDualAuth))
	}
	if st != stateActive {
		return fail(errInvalidState(w))
	}
	if action == "setKeyForDeletion" {
		k.DeletionAuth = &deletionAuth{By: subject(r), At: now}
	} else {
		k.DeletionAuth = nil
	}
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusNoContent, nil)
}
