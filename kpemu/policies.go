// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/json"
	"net/http"
	"time"
)

// Key policies: rotation (a root key rotated every interval_month months)
// and dualAuthDelete (a delete needs a prior authorization by someone else),
// in the shape of set-rotation-policy.md, manage-dual-auth.md and
// keyprotect-go-client's policy.go.

const (
	typePolicy         = "application/vnd.ibm.kms.policy+json"
	policyRotation     = "rotation"
	policyDualAuth     = "dualAuthDelete"
	dualAuthWindow     = 7 * 24 * time.Hour // a setKeyForDeletion lasts 7 days
	msgIntervalMonth   = "an integer between 1 and 12 (inclusive)"
	whatPolicy         = "Policy could not be created"
	whatPolicyRetrieve = "Policy could not be retrieved"
)

// keyPolicy is one policy of a key, as the state file keeps it.
type keyPolicy struct {
	ID            string `json:"id"`
	Enabled       bool   `json:"enabled"`
	IntervalMonth int    `json:"intervalMonth,omitempty"` // rotation only
	// Since is when a rotation policy was enabled or its interval last
	// changed: its schedule counts from here at the earliest.
	Since     time.Time `json:"since,omitzero"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"createdBy"`
	Updated   time.Time `json:"updated"`
	UpdatedBy string    `json:"updatedBy"`
}

// deletionAuth is the first of the two authorizations a key with a dual
// authorization policy needs to be deleted (setKeyForDeletion).
type deletionAuth struct {
	By string    `json:"by"` // the identity (token subject) that authorized
	At time.Time `json:"at"`
}

func (k *key) dualAuth() bool { return k.DualAuthPolicy != nil && k.DualAuthPolicy.Enabled }

// pendingAuth is the key's deletion authorization still in its 7 days.
func (k *key) pendingAuth(now time.Time) *deletionAuth {
	if k.DeletionAuth == nil || now.Sub(k.DeletionAuth.At) >= dualAuthWindow {
		return nil
	}
	return k.DeletionAuth
}

type rotationJSON struct {
	Enabled       bool `json:"enabled"`
	IntervalMonth int  `json:"interval_month,omitempty"`
}

type dualAuthJSON struct {
	Enabled bool `json:"enabled"`
}

// policyJSON is a key policy as the service answers it.
type policyJSON struct {
	ID             string        `json:"id"`
	CRN            string        `json:"crn"`
	Rotation       *rotationJSON `json:"rotation,omitempty"`
	DualAuthDelete *dualAuthJSON `json:"dualAuthDelete,omitempty"`
	CreatedBy      string        `json:"createdBy"`
	CreationDate   time.Time     `json:"creationDate"`
	UpdatedBy      string        `json:"updatedBy"`
	LastUpdateDate time.Time     `json:"lastUpdateDate"`
}

type policiesBody struct {
	Metadata  collectionMeta `json:"metadata"`
	Resources []policyJSON   `json:"resources,omitempty"` // left out when the key has none, as in manage-dual-auth.md
}

func (s *Server) policyCRN(id string) string {
	return "crn:v1:bluemix:public:kms:local:" + accountID + ":" + s.cfg.InstanceID + ":policy:" + id
}

func (s *Server) renderPolicy(kind string, p *keyPolicy) policyJSON {
	j := policyJSON{
		ID: p.ID, CRN: s.policyCRN(p.ID), CreatedBy: p.CreatedBy, CreationDate: p.Created,
		UpdatedBy: p.UpdatedBy, LastUpdateDate: p.Updated,
	}
	if kind == policyRotation {
		j.Rotation = &rotationJSON{Enabled: p.Enabled, IntervalMonth: p.IntervalMonth}
	} else {
		j.DualAuthDelete = &dualAuthJSON{Enabled: p.Enabled}
	}
	return j
}

func (s *Server) policiesCollection(items []policyJSON) policiesBody {
	return policiesBody{Metadata: collectionMeta{CollectionType: typePolicy, CollectionTotal: len(items)}, Resources: items}
}

func policyParam(r *http.Request, w string) (string, *apiError) {
	p := r.URL.Query().Get("policy")
	switch p {
	case "", policyRotation, policyDualAuth:
		return p, nil
	}
	return "", errQueryParam(w, "policy must be rotation or dualAuthDelete")
}

func (s *Server) getKeyPolicies(r *http.Request, now time.Time) result {
	which, e := policyParam(r, whatPolicyRetrieve)
	if e != nil {
		return fail(e)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	var items []policyJSON
	if k.RotationPolicy != nil && which != policyDualAuth {
		items = append(items, s.renderPolicy(policyRotation, k.RotationPolicy))
	}
	if k.DualAuthPolicy != nil && which != policyRotation {
		items = append(items, s.renderPolicy(policyDualAuth, k.DualAuthPolicy))
	}
	return ok(http.StatusOK, s.policiesCollection(items))
}

// putPoliciesRequest is the body keyprotect-go-client's Set*Policy sends.
type putPoliciesRequest struct {
	Metadata  *requestMeta `json:"metadata"`
	Resources []struct {
		Type     string `json:"type"`
		Rotation *struct {
			Enabled       *bool `json:"enabled"`
			IntervalMonth *int  `json:"interval_month"`
		} `json:"rotation"`
		DualAuthDelete *struct {
			Enabled *bool `json:"enabled"`
		} `json:"dualAuthDelete"`
	} `json:"resources"`
}

// policyChange is one validated policy of a PUT.
type policyChange struct {
	kind     string
	enabled  *bool
	interval *int
}

// decodeKeyPolicies parses and checks a PUT of key policies without the
// key; it can be fuzzed alone.
func decodeKeyPolicies(body []byte, which string) ([]policyChange, *apiError) {
	w := whatPolicy
	if body == nil {
		return nil, errNoBody(w)
	}
	var req putPoliciesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errBadBody(w, "the body is not valid JSON")
	}
	if e := checkPolicyEnvelope(w, req.Metadata, len(req.Resources)); e != nil {
		return nil, e
	}
	if which != "" && len(req.Resources) > 1 {
		return nil, reasonErr(http.StatusBadRequest, w, "NUM_COLLECTION_RESOURCE_ERR", "Only a single policy may be set per query parameter: Please pass single resource object")
	}
	var out []policyChange
	seen := map[string]bool{}
	for _, res := range req.Resources {
		var c policyChange
		switch {
		case res.Rotation != nil && res.DualAuthDelete == nil:
			c = policyChange{kind: policyRotation, enabled: res.Rotation.Enabled, interval: res.Rotation.IntervalMonth}
			if c.enabled == nil && c.interval == nil {
				return nil, errBadBody(w, "a rotation policy needs enabled or interval_month")
			}
			if c.interval != nil && (*c.interval < 1 || *c.interval > 12) {
				return nil, errFieldMust(w, "interval_month", msgIntervalMonth)
			}
		case res.DualAuthDelete != nil && res.Rotation == nil:
			c = policyChange{kind: policyDualAuth, enabled: res.DualAuthDelete.Enabled}
			if c.enabled == nil {
				return nil, errBadBody(w, "a dualAuthDelete policy needs enabled")
			}
		default:
			return nil, errBadBody(w, "each policy must hold one of rotation and dualAuthDelete")
		}
		if which != "" && c.kind != which {
			return nil, reasonErr(http.StatusBadRequest, w, "BODY_QUERY_PARAM_MISMATCH_ERR", "Data in body does not match data required by query parameter")
		}
		if seen[c.kind] {
			return nil, reasonErr(http.StatusBadRequest, w, "NUM_COLLECTION_RESOURCE_ERR", "Only a single policy of each type may be set: Please pass single resource object")
		}
		seen[c.kind] = true
		out = append(out, c)
	}
	return out, nil
}

func (s *Server) putKeyPolicies(r *http.Request, now time.Time) result {
	which, e := policyParam(r, whatPolicy)
	if e != nil {
		return fail(e)
	}
	body, e := readBody(r)
	if e != nil {
		return fail(e)
	}
	changes, e := decodeKeyPolicies(body, which)
	if e != nil {
		return fail(e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.lookup(r, r.PathValue("id"), "retrieve")
	if e != nil {
		return fail(e)
	}
	if k.Deleted != nil {
		return fail(errDeleted(whatPolicy))
	}
	// Check every change before making any.
	for _, c := range changes {
		if e := checkPolicyChange(k, c); e != nil {
			return fail(e)
		}
	}
	sub := subject(r)
	var items []policyJSON
	for _, c := range changes {
		p := applyPolicyChange(k, c, sub, now)
		items = append(items, s.renderPolicy(c.kind, p))
	}
	k.touch(now)
	s.trackRotation(k)
	if err := s.persistMuHeld(); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusOK, s.policiesCollection(items))
}

// checkPolicyChange refuses a policy the key cannot take.
func checkPolicyChange(k *key, c policyChange) *apiError {
	w := whatPolicy
	if c.kind == policyDualAuth {
		if k.dualAuth() && !*c.enabled {
			// manage-dual-auth.md: a key's dual authorization policy
			// cannot be reverted. The answer is kpemu's choice.
			return errFieldMust(w, "dualAuthDelete", "enabled: a key's dual authorization policy cannot be disabled")
		}
		return nil
	}
	if !k.root() {
		return reasonErr(http.StatusBadRequest, w, "KEY_ROOT_REQ_ERR", msgRootRequired+": Rotation policy cannot be set on a standard key")
	}
	if k.Imported {
		// key-rotation.md: no rotation policy for imported key material.
		return errFieldMust(w, "rotation", "set only on a root key generated by Key Protect: a key with imported key material is rotated by hand")
	}
	enabled := c.enabled == nil || *c.enabled
	if enabled && c.interval == nil && (k.RotationPolicy == nil || k.RotationPolicy.IntervalMonth == 0) {
		return errFieldMust(w, "interval_month", msgIntervalMonth)
	}
	return nil
}

// applyPolicyChange sets a checked policy on k and returns it.
func applyPolicyChange(k *key, c policyChange, sub string, now time.Time) *keyPolicy {
	slot := &k.RotationPolicy
	if c.kind == policyDualAuth {
		slot = &k.DualAuthPolicy
	}
	p := *slot
	if p == nil {
		// A new rotation policy is enabled unless told otherwise, as the
		// CLI's policy-update rotation is (key-protect-cli-commands.md).
		p = &keyPolicy{ID: newUUID(), Enabled: true, Created: now, CreatedBy: sub}
		*slot = p
	}
	was, wasInterval := p.Enabled, p.IntervalMonth
	if c.enabled != nil {
		p.Enabled = *c.enabled
	}
	if c.interval != nil {
		p.IntervalMonth = *c.interval
	}
	if c.kind == policyRotation && p.Enabled && (!was || p.IntervalMonth != wasInterval || p.Since.IsZero()) {
		p.Since = now
	}
	p.Updated, p.UpdatedBy = now, sub
	return p
}

// trackRotation keeps s.rotating in step with k's rotation policy; s.mu must
// be held for writing (or the server not yet shared).
func (s *Server) trackRotation(k *key) {
	if k.RotationPolicy != nil && k.RotationPolicy.Enabled && k.RotationPolicy.IntervalMonth > 0 {
		s.rotating[k.ID] = k
	} else {
		delete(s.rotating, k.ID)
	}
}

// policyRotationDue reports whether k's rotation policy rotates it at now:
// interval_month months (of Config.MonthLength) after its last rotation, its
// creation or the policy's setting, whichever is later. Only active root keys
// with generated material are rotated by a policy.
func (s *Server) policyRotationDue(k *key, now time.Time) bool {
	p := k.RotationPolicy
	if p == nil || !p.Enabled || p.IntervalMonth <= 0 || k.Deleted != nil || !k.root() || k.Imported ||
		k.effectiveState(now) != stateActive {
		return false
	}
	base := k.Created
	if k.Rotated != nil && k.Rotated.After(base) {
		base = *k.Rotated
	}
	if p.Since.After(base) {
		base = p.Since
	}
	return !now.Before(base.Add(time.Duration(p.IntervalMonth) * s.cfg.MonthLength))
}

// rotateDue rotates every key whose rotation policy is due at now, as a
// rotate action does (a new version, lastRotateDate, lastUpdateDate, a
// notification), without the rotate cooldown. One rotation a check, however
// many periods passed.
func (s *Server) rotateDue(now time.Time) {
	s.mu.RLock()
	due := false
	for _, k := range s.rotating {
		if s.policyRotationDue(k, now) {
			due = true
			break
		}
	}
	s.mu.RUnlock()
	if !due {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rotated := false
	for _, k := range s.rotating {
		if !s.policyRotationDue(k, now) {
			continue
		}
		t := now
		k.Versions = append(k.Versions, version{ID: newUUID(), Created: now, Material: randomBytes(32)})
		k.Rotated = &t
		k.touch(now)
		k.notify(now)
		rotated = true
	}
	if rotated {
		if err := s.persistMuHeld(); err != nil {
			s.log.Error("persist state after a policy rotation", "err", err)
		}
	}
}
