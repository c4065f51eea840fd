// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// registration associates a root key with a cloud resource (a bucket, a
// database) that an IBM service encrypts with it. Only IBM's services create
// them, service to service; kpemu makes them through AddRegistration or the
// admin API.
type registration struct {
	CRN                string    `json:"crn"`
	PreventKeyDeletion bool      `json:"preventKeyDeletion"`
	KeyVersion         string    `json:"keyVersion"` // the key version the resource uses
	Created            time.Time `json:"created"`
	Updated            time.Time `json:"updated"`
}

// registrationJSON is a registration as the service lists it
// (view-protected-resources.md).
type registrationJSON struct {
	KeyID              string      `json:"keyId"`
	ResourceCrn        string      `json:"resourceCrn"`
	CreatedBy          string      `json:"createdBy"`
	CreationDate       time.Time   `json:"creationDate"`
	UpdatedBy          string      `json:"updatedBy"`
	LastUpdated        time.Time   `json:"lastUpdated"`
	PreventKeyDeletion bool        `json:"preventKeyDeletion"`
	KeyVersion         versionJSON `json:"keyVersion"`
}

// registrationCreator stands for the IBM service that registers resources.
const registrationCreator = "ServiceId-kpemu-s2s"

// ErrNoSuchKey is returned by the Server's methods for a key id or alias the
// emulator does not hold (or no longer holds, after a purge).
var ErrNoSuchKey = errors.New("kpemu: no such key")

// findKey finds a key by id or alias, deleted keys included; s.mu must be held.
func (s *Server) findKey(idOrAlias string) *key {
	id := idOrAlias
	if !isUUID(id) {
		id = s.aliases[idOrAlias]
	}
	return s.keys[strings.ToLower(id)]
}

// AddRegistration registers the cloud resource crn against a root key, as an
// IBM service does when it starts to encrypt the resource with the key.
// preventKeyDeletion marks a resource under a retention policy: the key
// cannot be deleted, even with force. Registering the same crn again updates
// it. As in the service, the key must be an active root key.
func (s *Server) AddRegistration(keyID, crn string, preventKeyDeletion bool) error {
	if !strings.HasPrefix(crn, "crn:") || strings.Count(crn, ":") < 9 {
		return fmt.Errorf("kpemu: %q is not a CRN (crn:v1:...: ten segments)", crn)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.findKey(keyID)
	switch {
	case k == nil:
		return fmt.Errorf("%w: %s", ErrNoSuchKey, keyID)
	case k.Deleted != nil:
		return fmt.Errorf("kpemu: key %s is deleted", keyID)
	case !k.root():
		return fmt.Errorf("kpemu: key %s is a standard key; only root keys are registered (KEY_ROOT_REQ_REG_ERR)", keyID)
	case k.effectiveState(now) != stateActive:
		return fmt.Errorf("kpemu: key %s is not active; only active keys are registered (KEY_INVALID_STATE_ERR)", keyID)
	}
	i := slices.IndexFunc(k.Registrations, func(r registration) bool { return r.CRN == crn })
	if i >= 0 {
		k.Registrations[i].PreventKeyDeletion = preventKeyDeletion
		k.Registrations[i].Updated = now
	} else {
		k.Registrations = append(k.Registrations, registration{
			CRN: crn, PreventKeyDeletion: preventKeyDeletion, KeyVersion: k.latest().ID, Created: now, Updated: now,
		})
	}
	return s.persistMuHeld()
}

// RemoveRegistration removes the registration of crn against a key, as the
// IBM service does when the resource no longer uses the key.
func (s *Server) RemoveRegistration(keyID, crn string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.findKey(keyID)
	if k == nil {
		return fmt.Errorf("%w: %s", ErrNoSuchKey, keyID)
	}
	i := slices.IndexFunc(k.Registrations, func(r registration) bool { return r.CRN == crn })
	if i < 0 {
		return fmt.Errorf("kpemu: key %s has no registration for %s", keyID, crn)
	}
	k.Registrations = slices.Delete(k.Registrations, i, i+1)
	return s.persistMuHeld()
}

// deletionBlocked answers a delete of a key with registrations: 409
// PREV_KEY_DEL_ERR when a registered resource has a retention policy (force
// or not), 409 PROTECTED_RESOURCE_ERR without force (error-messages.md).
func deletionBlocked(k *key, force bool) *apiError {
	if slices.ContainsFunc(k.Registrations, func(r registration) bool { return r.PreventKeyDeletion }) {
		return reasonErr(http.StatusConflict, what("delete"), "PREV_KEY_DEL_ERR", msgPrevKeyDel)
	}
	if len(k.Registrations) > 0 && !force {
		return reasonErr(http.StatusConflict, what("delete"), "PROTECTED_RESOURCE_ERR", msgProtected)
	}
	return nil
}

// crnMatch reports whether crn matches a registrations query: segment by
// segment, "*" matches any segment and "prefix*" a segment starting with
// prefix (view-protected-resources.md, CRN query examples).
func crnMatch(query, crn string) bool {
	q, c := strings.Split(query, ":"), strings.Split(crn, ":")
	if len(q) != len(c) {
		return false
	}
	for i := range q {
		if p, wild := strings.CutSuffix(q[i], "*"); wild {
			if !strings.HasPrefix(c[i], p) {
				return false
			}
		} else if q[i] != c[i] {
			return false
		}
	}
	return true
}

func (s *Server) listRegistrations(r *http.Request, now time.Time) result {
	q := r.URL.Query()
	w := "Registrations could not be retrieved"
	limit, offset, e := page(q, w)
	if e != nil {
		return fail(e)
	}
	var prevent *bool
	if v := q.Get("preventKeyDeletion"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fail(errQueryParam(w, "preventKeyDeletion must be true or false"))
		}
		prevent = &b
	}
	crnQuery := q.Get("urlEncodedResourceCRNQuery")
	if strings.Contains(crnQuery, "%") {
		if u, err := url.QueryUnescape(crnQuery); err == nil {
			crnQuery = u
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var keys []*key
	if id := r.PathValue("id"); id != "" {
		k, e := s.lookup(r, id, "retrieve")
		if e != nil {
			return fail(e)
		}
		keys = []*key{k}
	} else {
		for _, k := range s.keys {
			keys = append(keys, k)
		}
	}
	var out []registrationJSON
	for _, k := range keys {
		for _, reg := range k.Registrations {
			if (prevent != nil && reg.PreventKeyDeletion != *prevent) || (crnQuery != "" && !crnMatch(crnQuery, reg.CRN)) {
				continue
			}
			rj := registrationJSON{
				KeyID: k.ID, ResourceCrn: reg.CRN, CreatedBy: registrationCreator, CreationDate: reg.Created,
				UpdatedBy: registrationCreator, LastUpdated: reg.Updated, PreventKeyDeletion: reg.PreventKeyDeletion,
				KeyVersion: versionJSON{ID: reg.KeyVersion},
			}
			if v := k.version(reg.KeyVersion); v != nil {
				c := v.Created
				rj.KeyVersion.CreationDate = &c
			}
			out = append(out, rj)
		}
	}
	slices.SortFunc(out, func(a, b registrationJSON) int {
		return cmp.Or(a.CreationDate.Compare(b.CreationDate), strings.Compare(a.KeyID, b.KeyID), strings.Compare(a.ResourceCrn, b.ResourceCrn))
	})
	out = out[min(offset, len(out)):]
	out = out[:min(limit, len(out))]
	if out == nil {
		out = []registrationJSON{}
	}
	return ok(http.StatusOK, map[string]any{
		"metadata":  collectionMeta{CollectionType: typeRegistration, CollectionTotal: len(out)},
		"resources": out,
	})
}
