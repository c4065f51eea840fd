// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// The admin API under /_kpemu/ drives the emulator in tests and demos. It
// answers JSON; errors are {"error": "..."}. It is never subject to faults.
func (s *Server) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_kpemu/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "instanceId": s.cfg.InstanceID})
	})
	mux.HandleFunc("GET /_kpemu/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.CurrentFaults())
	})
	mux.HandleFunc("PUT /_kpemu/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if !decodeAdmin(w, r, &f) {
			return
		}
		if err := s.SetFaults(f); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s.CurrentFaults())
	})
	mux.HandleFunc("DELETE /_kpemu/faults", func(w http.ResponseWriter, r *http.Request) {
		_ = s.SetFaults(Faults{})
		writeJSON(w, http.StatusOK, s.CurrentFaults())
	})
	mux.HandleFunc("GET /_kpemu/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": s.Stats()})
	})
	mux.HandleFunc("DELETE /_kpemu/stats", func(w http.ResponseWriter, r *http.Request) {
		s.ResetStats()
		writeJSON(w, http.StatusOK, map[string]any{"routes": s.Stats()})
	})
	mux.HandleFunc("GET /_kpemu/requests", func(w http.ResponseWriter, r *http.Request) {
		entries := s.reqlog.snapshot()
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				adminError(w, http.StatusBadRequest, "limit must be a non-negative integer")
				return
			}
			if n < len(entries) {
				entries = entries[len(entries)-n:]
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"requests": entries})
	})
	mux.HandleFunc("GET /_kpemu/clock", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"now": s.now()})
	})
	mux.HandleFunc("POST /_kpemu/clock", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Advance Duration `json:"advance"`
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if req.Advance <= 0 {
			adminError(w, http.StatusBadRequest, "advance must be a positive duration such as \"31s\"")
			return
		}
		s.AdvanceClock(time.Duration(req.Advance))
		writeJSON(w, http.StatusOK, map[string]any{"now": s.now()})
	})
	mux.HandleFunc("POST /_kpemu/apikeys", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			APIKey  string `json:"apikey"`
			Revoked bool   `json:"revoked"`
			Remove  bool   `json:"remove"`
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if req.APIKey == "" {
			adminError(w, http.StatusBadRequest, "apikey is required")
			return
		}
		s.SetAPIKey(req.APIKey, req.Revoked, req.Remove)
		writeJSON(w, http.StatusOK, map[string]any{"id": apiKeyID(req.APIKey), "revoked": req.Revoked, "removed": req.Remove})
	})
	mux.HandleFunc("POST /_kpemu/registrations", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			KeyID              string `json:"keyId"`
			CRN                string `json:"crn"`
			PreventKeyDeletion bool   `json:"preventKeyDeletion"`
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if err := s.AddRegistration(req.KeyID, req.CRN, req.PreventKeyDeletion); err != nil {
			adminKeyError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, req)
	})
	mux.HandleFunc("DELETE /_kpemu/registrations", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			KeyID string `json:"keyId"`
			CRN   string `json:"crn"`
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if err := s.RemoveRegistration(req.KeyID, req.CRN); err != nil {
			adminKeyError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, req)
	})
	mux.HandleFunc("GET /_kpemu/instance-policies", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.instancePolicies(""))
	})
	mux.HandleFunc("PUT /_kpemu/instance-policies", func(w http.ResponseWriter, r *http.Request) {
		// Sets instance policies around the network policies themselves:
		// a field left out is left as it is.
		var req struct {
			AllowedNetwork *string   `json:"allowedNetwork"` // public-and-private | private-only
			AllowedIPs     *[]string `json:"allowedIPs"`     // [] disables the policy
			DualAuthDelete *bool     `json:"dualAuthDelete"`
			RotationMonths *int      `json:"rotationMonths"` // 0 disables the policy
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		// Check every field before changing any.
		var err error
		switch {
		case req.AllowedNetwork != nil && *req.AllowedNetwork != networkPrivateOnly && *req.AllowedNetwork != networkPublicPrivate:
			err = errors.New("allowedNetwork must be public-and-private or private-only")
		case req.RotationMonths != nil && (*req.RotationMonths < 0 || *req.RotationMonths > 12):
			err = errors.New("rotationMonths must be 1 to 12, or 0 to disable the policy")
		case req.AllowedIPs != nil && len(*req.AllowedIPs) > 0:
			_, err = parseCIDRs(*req.AllowedIPs)
		}
		if err == nil && req.AllowedNetwork != nil {
			err = s.SetAllowedNetwork(*req.AllowedNetwork == networkPrivateOnly)
		}
		if err == nil && req.AllowedIPs != nil {
			err = s.SetAllowedIPs(*req.AllowedIPs)
		}
		if err == nil && req.DualAuthDelete != nil {
			err = s.SetInstanceDualAuthDelete(*req.DualAuthDelete)
		}
		if err == nil && req.RotationMonths != nil {
			err = s.SetInstanceRotation(*req.RotationMonths)
		}
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s.instancePolicies(""))
	})
	mux.HandleFunc("DELETE /_kpemu/instance-policies", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ClearInstancePolicies(); err != nil {
			adminError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s.instancePolicies(""))
	})
	mux.HandleFunc("/_kpemu/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, "no such admin route: "+r.Method+" "+r.URL.Path)
	})
	return http.MaxBytesHandler(mux, 64<<10)
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		adminError(w, http.StatusRequestEntityTooLarge, "body too large")
		return false
	}
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// adminKeyError answers an error of a Server method about a key: 404 for a
// key the emulator does not hold, else 400.
func adminKeyError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	if errors.Is(err, ErrNoSuchKey) {
		status = http.StatusNotFound
	}
	adminError(w, status, err.Error())
}
