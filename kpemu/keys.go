// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	accountID       = "a/0000000000000000000000000000kpem"
	maxAliases      = 5
	restoreWindow   = 30 * 24 * time.Hour
	purgeAfter      = 4 * time.Hour
	purgeScheduled  = 90 * 24 * time.Hour
	defaultKeyRing  = "default"
	defaultListSize = 200
	maxListSize     = 5000
	maxPayload      = 7500 // bytes of a standard key's imported payload
)

// keyJSON is a key as the service returns it.
type keyJSON struct {
	Type              string          `json:"type"`
	ID                string          `json:"id"`
	Name              string          `json:"name"`
	Aliases           []string        `json:"aliases,omitempty"`
	Description       string          `json:"description,omitempty"`
	Tags              []string        `json:"tags,omitempty"`
	State             int             `json:"state"`
	ExpirationDate    *time.Time      `json:"expirationDate,omitempty"`
	Extractable       bool            `json:"extractable"`
	CRN               string          `json:"crn"`
	Imported          bool            `json:"imported"`
	CreationDate      time.Time       `json:"creationDate"`
	CreatedBy         string          `json:"createdBy"`
	AlgorithmType     string          `json:"algorithmType"`
	AlgorithmMetadata map[string]any  `json:"algorithmMetadata"`
	AlgorithmBitSize  int             `json:"algorithmBitSize"`
	AlgorithmMode     string          `json:"algorithmMode"`
	LastUpdateDate    *time.Time      `json:"lastUpdateDate,omitempty"`
	LastRotateDate    *time.Time      `json:"lastRotateDate,omitempty"`
	KeyVersion        *versionJSON    `json:"keyVersion,omitempty"`
	DualAuthDelete    keyDualAuthJSON `json:"dualAuthDelete"`
	Rotation          *rotationJSON   `json:"rotation,omitempty"`
	KeyRingID         string          `json:"keyRingID"`
	Deleted           bool            `json:"deleted"`
	DeletionDate      *time.Time      `json:"deletionDate,omitempty"`
	DeletedBy         string          `json:"deletedBy,omitempty"`
	PurgeAllowed      *bool           `json:"purgeAllowed,omitempty"`
	PurgeAllowedFrom  *time.Time      `json:"purgeAllowedFrom,omitempty"`
	PurgeScheduledOn  *time.Time      `json:"purgeScheduledOn,omitempty"`
	RestoreExpiration *time.Time      `json:"restoreExpirationDate,omitempty"`
	RestoreAllowed    *bool           `json:"restoreAllowed,omitempty"`
	Payload           string          `json:"payload,omitempty"`
}

// keyDualAuthJSON is a key's dualAuthDelete field: with the policy on,
// whether the key is set for deletion and until when (the key schema of
// IBM/keyprotect-java-client, generated from the service's API definition).
type keyDualAuthJSON struct {
	Enabled           bool       `json:"enabled"`
	KeySetForDeletion *bool      `json:"keySetForDeletion,omitempty"`
	AuthExpiration    *time.Time `json:"authExpiration,omitempty"`
}

type versionJSON struct {
	ID           string     `json:"id"`
	CreationDate *time.Time `json:"creationDate,omitempty"`
}

type keysBody struct {
	Metadata  collectionMeta `json:"metadata"`
	Resources []keyJSON      `json:"resources,omitempty"` // the service leaves it out of an empty list
}

func (s *Server) crn(id string) string {
	return "crn:v1:bluemix:public:kms:local:" + accountID + ":" + s.cfg.InstanceID + ":key:" + id
}

func (s *Server) render(k *key, now time.Time, withPayload bool) keyJSON {
	lv := k.latest()
	created := lv.Created
	j := keyJSON{
		Type:              typeKey,
		ID:                k.ID,
		Name:              k.Name,
		Description:       k.Description,
		Tags:              k.Tags,
		State:             s.shownState(k, now, s.deletedAsDeactivated()),
		ExpirationDate:    k.Expiration,
		Extractable:       k.Extractable,
		CRN:               s.crn(k.ID),
		Imported:          k.Imported,
		CreationDate:      k.Created,
		CreatedBy:         "ServiceId-kpemu",
		AlgorithmType:     "AES",
		AlgorithmMetadata: map[string]any{"bitLength": strconv.Itoa(len(lv.Material) * 8), "mode": "CBC_PAD"},
		AlgorithmBitSize:  len(lv.Material) * 8,
		AlgorithmMode:     "CBC_PAD",
		LastUpdateDate:    k.Updated,
		LastRotateDate:    k.Rotated,
		KeyVersion:        &versionJSON{ID: lv.ID, CreationDate: &created},
		KeyRingID:         k.KeyRing,
	}
	if k.dualAuth() {
		a := k.pendingAuth(now)
		set := a != nil
		j.DualAuthDelete = keyDualAuthJSON{Enabled: true, KeySetForDeletion: &set}
		if set {
			exp := a.At.Add(dualAuthWindow)
			j.DualAuthDelete.AuthExpiration = &exp
		}
	}
	if p := k.RotationPolicy; p != nil {
		j.Rotation = &rotationJSON{Enabled: p.Enabled, IntervalMonth: p.IntervalMonth}
	}
	for _, a := range k.Aliases {
		j.Aliases = append(j.Aliases, a.Name)
	}
	if k.Deleted != nil {
		j.Deleted = true
		d := *k.Deleted
		from := d.Add(purgeAfter)
		sched := d.Add(purgeScheduled)
		allowed := !now.Before(from)
		j.DeletionDate, j.DeletedBy = &d, "ServiceId-kpemu"
		j.PurgeAllowed, j.PurgeAllowedFrom, j.PurgeScheduledOn = &allowed, &from, &sched
		restoreBy := d.Add(restoreWindow)
		restorable := now.Before(restoreBy) && (k.Expiration == nil || now.Before(*k.Expiration))
		j.RestoreExpiration, j.RestoreAllowed = &restoreBy, &restorable
	}
	if withPayload && k.Extractable && k.Deleted == nil {
		j.Payload = base64.StdEncoding.EncodeToString(lv.Material)
	}
	return j
}

// shownState is the state a key is answered with: its effective state, or 3
// (Deactivated) for a deleted key while the DeletedAsDeactivated fault is set.
func (s *Server) shownState(k *key, now time.Time, deletedAsDeactivated bool) int {
	if k.Deleted != nil && deletedAsDeactivated {
		return stateDeactivated
	}
	return k.effectiveState(now)
}

func (s *Server) keysCollection(keys ...keyJSON) keysBody {
	return keysBody{Metadata: collectionMeta{CollectionType: typeKey, CollectionTotal: len(keys)}, Resources: keys}
}

// lookup finds a key by id or alias; s.mu must be held. A purged key is
// gone (404); a deleted one is still found, with state 5.
func (s *Server) lookup(r *http.Request, idOrAlias, op string) (*key, *apiError) {
	id := idOrAlias
	if !isUUID(id) {
		var ok bool
		if id, ok = s.aliases[idOrAlias]; !ok {
			return nil, errNotFound(what(op))
		}
	}
	k, ok := s.keys[strings.ToLower(id)]
	if !ok {
		return nil, errNotFound(what(op))
	}
	if ring := r.Header.Get("x-kms-key-ring"); ring != "" && ring != k.KeyRing {
		return nil, errNotFound(what(op))
	}
	return k, nil
}

// requestMeta is the metadata of a request body that carries a collection
// of resources.
type requestMeta struct {
	CollectionType  string `json:"collectionType"`
	CollectionTotal int    `json:"collectionTotal"`
}

// checkPolicyEnvelope is the check a PUT of key or instance policies
// starts with: metadata present, its total matching the resources, and at
// least one resource.
func checkPolicyEnvelope(w string, meta *requestMeta, resources int) *apiError {
	if meta == nil || meta.CollectionType == "" {
		return errBadBody(w, "CollectionMetadata is empty")
	}
	if meta.CollectionTotal != resources {
		return reasonErr(http.StatusBadRequest, w, "COLLECTION_TOTAL_MISMATCH_ERR", "Collection total does not match number of resources")
	}
	if resources == 0 {
		return errBadBody(w, "at least one policy is required")
	}
	return nil
}

type createKeyRequest struct {
	Metadata  *requestMeta        `json:"metadata"`
	Resources []createKeyResource `json:"resources"`
}

type createKeyResource struct {
	Type                string     `json:"type"`
	Name                string     `json:"name"`
	Description         string     `json:"description"`
	Extractable         bool       `json:"extractable"`
	Payload             string     `json:"payload"`
	ExpirationDate      *time.Time `json:"expirationDate"`
	Aliases             []string   `json:"aliases"`
	Tags                []string   `json:"tags"`
	EncryptedNonce      string     `json:"encryptedNonce"`
	IV                  string     `json:"iv"`
	EncryptionAlgorithm string     `json:"encryptionAlgorithm"`
}

// decodeCreateKey parses and validates a create-key body; it does not touch
// the emulator's state, so it can be fuzzed alone.
func decodeCreateKey(body []byte, now time.Time) (*createKeyResource, []byte, *apiError) {
	w := what("create")
	if body == nil {
		return nil, nil, errNoBody(w)
	}
	var req createKeyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, errBadBody(w, "the body is not valid JSON")
	}
	if req.Metadata == nil || req.Metadata.CollectionType == "" {
		return nil, nil, errBadBody(w, "CollectionMetadata is empty")
	}
	if len(req.Resources) != 1 {
		return nil, nil, errBadBody(w, "Only creation of one key per request is supported")
	}
	if req.Metadata.CollectionTotal != len(req.Resources) {
		return nil, nil, reasonErr(http.StatusBadRequest, w, "COLLECTION_TOTAL_MISMATCH_ERR", "Collection total does not match number of resources")
	}
	res := req.Resources[0]
	if n := utf8.RuneCountInString(res.Name); n < 2 || n > 90 || strings.TrimSpace(res.Name) == "" {
		return nil, nil, errField(w, "name must be 2 to 90 characters")
	}
	if len(res.Description) > 240 {
		return nil, nil, errField(w, "description must be at most 240 characters")
	}
	if res.ExpirationDate != nil && !res.ExpirationDate.After(now) {
		return nil, nil, errField(w, "expirationDate must be in the future")
	}
	if res.EncryptedNonce != "" || res.IV != "" {
		return nil, nil, errField(w, "import with an import token (encryptedNonce, iv) is not supported by kpemu")
	}
	if len(res.Aliases) > maxAliases {
		return nil, nil, reasonErr(http.StatusBadRequest, w, "NUM_ALIASES_ERR", "A key can have at most 5 aliases")
	}
	for _, a := range res.Aliases {
		if err := validAlias(a); err != "" {
			return nil, nil, errField(w, err)
		}
	}
	var material []byte
	if res.Payload != "" {
		p, err := base64.StdEncoding.DecodeString(res.Payload)
		if err != nil {
			return nil, nil, errFieldMust(w, "payload", "a base64 encoded key material: "+err.Error())
		}
		switch {
		case !res.Extractable && len(p) != 16 && len(p) != 24 && len(p) != 32:
			return nil, nil, errField(w, "a root key payload must be 128, 192 or 256 bits")
		case len(p) == 0 || len(p) > maxPayload:
			return nil, nil, errField(w, "a standard key payload must be 1 to 7500 bytes")
		}
		material = p
	}
	return &res, material, nil
}

var aliasRE = regexp.MustCompile(`^[A-Za-z0-9_-]{2,90}$`)

var reservedAliases = map[string]bool{
	"allowed_ip": true, "key": true, "keys": true, "metadata": true, "policy": true, "policies": true,
	"registration": true, "registrations": true, "ring": true, "rings": true, "rotate": true,
	"wrap": true, "unwrap": true, "rewrap": true, "version": true, "versions": true,
}

func validAlias(a string) string {
	switch {
	case !aliasRE.MatchString(a):
		return "an alias must be 2 to 90 characters of letters, digits, '-' and '_'"
	case isUUID(a):
		return "an alias must not be a UUID"
	case reservedAliases[strings.ToLower(a)]:
		return "alias " + a + " is a reserved word"
	}
	return ""
}

var keyRingRE = regexp.MustCompile(`^[A-Za-z0-9-]{2,100}$`)

func (s *Server) createKey(r *http.Request, now time.Time) result {
	body, e := readBody(r)
	if e != nil {
		return fail(e)
	}
	res, material, e := decodeCreateKey(body, now)
	if e != nil {
		return fail(e)
	}
	ring := cmp.Or(r.Header.Get("x-kms-key-ring"), defaultKeyRing)
	if !keyRingRE.MatchString(ring) {
		return fail(reasonErr(http.StatusBadRequest, what("create"), "BAD_HEADER_ERR", "The x-kms-key-ring header is not a valid key ring id"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range res.Aliases {
		if _, taken := s.aliases[a]; taken {
			return fail(reasonErr(http.StatusConflict, what("create"), "KEY_ALIAS_NOT_UNIQUE_ERR", "The alias "+a+" is already used by another key in this instance"))
		}
	}
	imported := material != nil
	if !imported {
		material = randomBytes(32)
	}
	k := &key{
		ID:          newUUID(),
		Name:        res.Name,
		Description: res.Description,
		Extractable: res.Extractable,
		Imported:    imported,
		Tags:        res.Tags,
		KeyRing:     ring,
		Versions:    []version{{ID: "", Created: now, Material: material}},
		State:       stateActive,
		Created:     now,
		Changed:     now,
		Expiration:  res.ExpirationDate,
	}
	k.Versions[0].ID = k.ID // the first version carries the key's id, as in the service
	s.applyInstanceKeyPolicies(k, subject(r), now)
	for _, a := range res.Aliases {
		if !k.hasAlias(a) {
			k.Aliases = append(k.Aliases, alias{Name: a, Created: now})
			s.aliases[a] = k.ID
		}
	}
	s.keys[k.ID] = k
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusCreated, s.keysCollection(s.render(k, now, true)))
}

func (s *Server) persistFailed(err error) *apiError {
	s.log.Error("persist state", "err", err)
	return errServer(http.StatusInternalServerError)
}

// page reads a list's limit (default 200, at most 5000) and offset.
func page(q url.Values, w string) (limit, offset int, e *apiError) {
	limit = defaultListSize
	var err error
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxListSize {
			return 0, 0, errQueryParam(w, "limit must be an integer from 1 to 5000")
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, errQueryParam(w, "offset must be a non-negative integer")
		}
	}
	return limit, offset, nil
}

func (s *Server) listKeys(r *http.Request, now time.Time) result {
	q := r.URL.Query()
	w := "Keys could not be retrieved"
	limit, offset, e := page(q, w)
	if e != nil {
		return fail(e)
	}
	var err error
	states := map[int]bool{statePreActive: true, stateActive: true, stateSuspended: true, stateDeactivated: true}
	if v := q.Get("state"); v != "" {
		states = map[int]bool{}
		for _, p := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || (n != 0 && n != 1 && n != 2 && n != 3 && n != 5) {
				return fail(errQueryParam(w, "state must be a list of 0, 1, 2, 3 and 5"))
			}
			states[n] = true
		}
	}
	var extractable *bool
	if v := q.Get("extractable"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fail(errQueryParam(w, "extractable must be true or false"))
		}
		extractable = &b
	}
	total := false
	if v := q.Get("totalCount"); v != "" {
		if total, err = strconv.ParseBool(v); err != nil {
			return fail(errQueryParam(w, "totalCount must be true or false"))
		}
	}
	ring := r.Header.Get("x-kms-key-ring")
	asDeactivated := s.deletedAsDeactivated()
	s.mu.RLock()
	var match []*key
	for _, k := range s.keys {
		if !states[s.shownState(k, now, asDeactivated)] || (extractable != nil && k.Extractable != *extractable) || (ring != "" && k.KeyRing != ring) {
			continue
		}
		match = append(match, k)
	}
	slices.SortFunc(match, func(a, b *key) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	out := keysBody{Metadata: collectionMeta{CollectionType: typeKey}}
	if total {
		n := len(match)
		out.Metadata.TotalCount = &n
	}
	for i := offset; i < len(match) && i < offset+limit; i++ {
		out.Resources = append(out.Resources, s.render(match[i], now, false))
	}
	s.mu.RUnlock()
	out.Metadata.CollectionTotal = len(out.Resources)
	return ok(http.StatusOK, out)
}

// headKeys answers the number of keys a list would hold, in the Key-Total
// header, with the same filters.
func (s *Server) headKeys(r *http.Request, now time.Time) result {
	q := r.URL.Query()
	q.Del("limit")
	q.Del("offset")
	q.Set("limit", strconv.Itoa(maxListSize))
	q.Set("totalCount", "true")
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	res := s.listKeys(r2, now)
	if res.err != nil {
		return res
	}
	n := *res.body.(keysBody).Metadata.TotalCount
	return result{status: http.StatusOK, header: [][2]string{{"Key-Total", strconv.Itoa(n)}}}
}

func (s *Server) getKey(r *http.Request, now time.Time) result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	// A deleted key still answers, with state 5 and without its material.
	return ok(http.StatusOK, s.keysCollection(s.render(k, now, true)))
}

func (s *Server) getKeyMetadata(r *http.Request, now time.Time) result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	return ok(http.StatusOK, s.keysCollection(s.render(k, now, false)))
}

func preferRepresentation(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("prefer")), "return=representation")
}

func (s *Server) deleteKey(r *http.Request, now time.Time) result {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return fail(errQueryParam(what("delete"), "force must be true or false"))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "delete")
	if e != nil {
		return fail(e)
	}
	if k.Deleted != nil {
		return fail(errDeleted(what("delete")))
	}
	if e := deletionBlocked(k, force); e != nil {
		return fail(e)
	}
	if k.dualAuth() {
		switch a := k.pendingAuth(now); {
		case a == nil:
			// error-messages.md, "Number of authorizations required to
			// delete is not met".
			e := reasonErr(http.StatusConflict, what("delete"), "AUTHORIZATIONS_NOT_MET", msgAuthsNotMet)
			e.msg = "Conflict: 1 prior authorization(s) are required for deletion: " + what("delete") + ". Please see `reasons` for more details."
			return fail(e)
		case a.By == subject(r):
			// The second authorization must come from someone else.
			return fail(reasonErr(http.StatusConflict, what("delete"), "AUTHORIZATIONS_NOT_MET", msgAuthFailed))
		}
	}
	k.DeletionAuth = nil
	t := now
	k.Deleted, k.State, k.Changed = &t, stateDestroyed, now
	k.touch(now)
	k.notify(now)
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	if preferRepresentation(r) {
		return ok(http.StatusOK, s.keysCollection(s.render(k, now, false)))
	}
	return ok(http.StatusNoContent, nil)
}

func (s *Server) restoreKey(r *http.Request, now time.Time) result {
	w := what("restore")
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "restore")
	if e != nil {
		return fail(e)
	}
	switch {
	case k.Deleted == nil:
		return fail(errInvalidState(w))
	case now.Sub(*k.Deleted) > restoreWindow:
		return fail(reasonErr(http.StatusBadRequest, w, "KEY_RESTORE_EXPIRED", msgRestoreExpired))
	case k.Expiration != nil && !now.Before(*k.Expiration):
		e := reasonErr(http.StatusBadRequest, w, "KEY_EXPIRED_ERR", msgKeyExpired)
		e.msg = "Bad Request: The key expired on " + k.Expiration.Format("2006-01-02 15:04:05 -0700 MST") + ": " + w + ". Please see `reasons` for more details."
		return fail(e)
	case s.cfg.ActionCooldown > 0 && now.Sub(k.Changed) < s.cfg.ActionCooldown:
		return fail(errTooEarly(w))
	}
	k.Deleted, k.State, k.Changed = nil, stateActive, now
	k.touch(now)
	k.notify(now)
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusCreated, s.keysCollection(s.render(k, now, false)))
}

func (s *Server) purgeKey(r *http.Request, now time.Time) result {
	w := what("purge")
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "purge")
	if e != nil {
		return fail(e)
	}
	switch {
	case k.Deleted == nil:
		return fail(errInvalidState(w))
	case now.Sub(*k.Deleted) < purgeAfter:
		return fail(reasonErr(http.StatusConflict, w, "REQ_TOO_EARLY_ERR", msgTooEarly+": Purge operation is allowed 4h0m0s after key is deleted"))
	}
	rendered := s.render(k, now, false)
	delete(s.keys, k.ID)
	delete(s.rotating, k.ID)
	for _, a := range k.Aliases {
		delete(s.aliases, a.Name)
	}
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	if preferRepresentation(r) {
		return ok(http.StatusOK, s.keysCollection(rendered))
	}
	return ok(http.StatusNoContent, nil)
}

func (s *Server) listVersions(r *http.Request, now time.Time) result {
	q := r.URL.Query()
	w := "KeyVersion(s) could not be retrieved"
	limit, offset, e := page(q, w)
	if e != nil {
		return fail(e)
	}
	var err error
	total, all := false, false
	if v := q.Get("totalCount"); v != "" {
		if total, err = strconv.ParseBool(v); err != nil {
			return fail(errQueryParam(w, "totalCount must be true or false"))
		}
	}
	if v := q.Get("allKeyStates"); v != "" {
		if all, err = strconv.ParseBool(v); err != nil {
			return fail(errQueryParam(w, "allKeyStates must be true or false"))
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	if k.Deleted != nil && !all {
		return fail(errDeleted(w))
	}
	type versionsBody struct {
		Metadata  collectionMeta `json:"metadata"`
		Resources []versionJSON  `json:"resources"`
	}
	out := versionsBody{Metadata: collectionMeta{CollectionType: typeKeyVersion}, Resources: []versionJSON{}}
	if total {
		n := len(k.Versions)
		out.Metadata.TotalCount = &n
	}
	// Newest first, as the service lists them.
	for i := len(k.Versions) - 1 - offset; i >= 0 && len(out.Resources) < limit; i-- {
		c := k.Versions[i].Created
		out.Resources = append(out.Resources, versionJSON{ID: k.Versions[i].ID, CreationDate: &c})
	}
	out.Metadata.CollectionTotal = len(out.Resources)
	return ok(http.StatusOK, out)
}

type aliasJSON struct {
	KeyID        string    `json:"keyId"`
	Alias        string    `json:"alias"`
	CreatedBy    string    `json:"createdBy"`
	CreationDate time.Time `json:"creationDate"`
}

func (s *Server) createAlias(r *http.Request, now time.Time) result {
	w := "Alias could not be created"
	name := r.PathValue("alias")
	if msg := validAlias(name); msg != "" {
		return fail(errField(w, msg))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	if k.Deleted != nil {
		return fail(errDeleted(w))
	}
	if owner, taken := s.aliases[name]; taken && owner != k.ID {
		return fail(reasonErr(http.StatusConflict, w, "KEY_ALIAS_NOT_UNIQUE_ERR", "The alias "+name+" is already used by another key in this instance"))
	}
	status := http.StatusOK
	if !k.hasAlias(name) {
		if len(k.Aliases) >= maxAliases {
			return fail(reasonErr(http.StatusBadRequest, w, "KEY_ALIAS_QUOTA_ERR", "A key can have at most 5 aliases"))
		}
		k.Aliases = append(k.Aliases, alias{Name: name, Created: now})
		k.touch(now)
		s.aliases[name] = k.ID
		if err := s.persistMuHeld(); err != nil {
			return fail(s.persistFailed(err))
		}
		status = http.StatusCreated
	}
	var created time.Time
	for _, a := range k.Aliases {
		if a.Name == name {
			created = a.Created
		}
	}
	return ok(status, map[string]any{
		"metadata":  collectionMeta{CollectionType: typeAlias, CollectionTotal: 1},
		"resources": []aliasJSON{{KeyID: k.ID, Alias: name, CreatedBy: "ServiceId-kpemu", CreationDate: created}},
	})
}

func (s *Server) deleteAlias(r *http.Request, now time.Time) result {
	w := "Alias could not be deleted"
	name := r.PathValue("alias")
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	if !k.hasAlias(name) {
		return fail(reasonErr(http.StatusNotFound, w, "KEY_ALIAS_NOT_FOUND_ERR", "The alias "+name+" does not exist for this key"))
	}
	k.Aliases = slices.DeleteFunc(k.Aliases, func(a alias) bool { return a.Name == name })
	k.touch(now)
	delete(s.aliases, name)
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusNoContent, nil)
}

func jsonMarshalIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(b, '\n'), nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
