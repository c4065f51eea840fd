// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// result is what an API handler answers: a status with a JSON body (nil for
// 204), or an error in the service's shape.
type result struct {
	status int
	body   any
	err    *apiError
	header [][2]string
}

type apiHandler func(r *http.Request, now time.Time) result

func ok(status int, body any) result { return result{status: status, body: body} }
func fail(e *apiError) result        { return result{err: e} }

var knownActions = map[string]bool{
	"wrap": true, "unwrap": true, "rewrap": true, "rotate": true, "disable": true, "enable": true,
	"setKeyForDeletion": true, "unsetKeyForDeletion": true, "sync": true, "restore": true,
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	fixed := func(name string) func(*http.Request) string {
		return func(*http.Request) string { return name }
	}
	iam := s.observe(fixed(routeIAMToken), http.HandlerFunc(s.handleToken))
	mux.Handle("POST /identity/token", iam)
	mux.Handle("POST /oidc/token", iam)

	api := func(pattern, name string, h apiHandler) {
		mux.Handle(pattern, s.observe(fixed(name), s.api(h)))
	}
	api("POST /api/v2/keys", "keys_create", s.createKey)
	api("GET /api/v2/keys", "keys_list", s.listKeys)
	api("HEAD /api/v2/keys", "keys_head", s.headKeys)
	api("GET /api/v2/keys/registrations", "registrations", s.listRegistrations)
	api("GET /api/v2/keys/{id}", "key_get", s.getKey)
	api("GET /api/v2/keys/{id}/metadata", "key_metadata", s.getKeyMetadata)
	api("DELETE /api/v2/keys/{id}", "key_delete", s.deleteKey)
	api("POST /api/v2/keys/{id}/restore", "key_restore", s.restoreKey)
	api("DELETE /api/v2/keys/{id}/purge", "key_purge", s.purgeKey)
	api("GET /api/v2/keys/{id}/versions", "key_versions", s.listVersions)
	api("GET /api/v2/keys/{id}/registrations", "registrations", s.listRegistrations)
	api("GET /api/v2/keys/{id}/policies", "key_policies_get", s.getKeyPolicies)
	api("PUT /api/v2/keys/{id}/policies", "key_policies_put", s.putKeyPolicies)
	api("GET /api/v2/instance/policies", "instance_policies_get", s.getInstancePolicies)
	api("PUT /api/v2/instance/policies", "instance_policies_put", s.putInstancePolicies)
	api("POST /api/v2/keys/{id}/aliases/{alias}", "alias_create", s.createAlias)
	api("DELETE /api/v2/keys/{id}/aliases/{alias}", "alias_delete", s.deleteAlias)
	actionName := func(r *http.Request) string {
		a := r.PathValue("action")
		if a == "" {
			a = r.URL.Query().Get("action")
		}
		if !knownActions[a] {
			return "action_unknown"
		}
		return "action_" + a
	}
	mux.Handle("POST /api/v2/keys/{id}/actions/{action}", s.observe(actionName, s.api(s.keyAction)))
	// The older form of the same actions: POST /api/v2/keys/{id}?action=wrap.
	mux.Handle("POST /api/v2/keys/{id}", s.observe(actionName, s.api(s.keyAction)))

	mux.Handle("/_kpemu/", s.adminRoutes())
	mux.Handle("/", s.observe(fixed("unknown"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errRoute(http.StatusNotFound))
	})))
	return mux
}

// observe counts and logs each request under its route name and applies the
// injected faults before the handler runs.
func (s *Server) observe(name func(*http.Request) string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := name(r)
		rec := &statusRecorder{ResponseWriter: w}
		fault := s.applyFaults(rec, r, route)
		if !fault.answered() {
			r.Body = http.MaxBytesReader(rec, r.Body, maxBody)
			h.ServeHTTP(rec, r)
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if fault == faultReset || fault == faultOutage {
			status = 0 // the connection was dropped without an answer
		}
		s.counter.add(route, status, fault)
		s.reqlog.add(logEntry{
			Time:          start.UTC(),
			Method:        r.Method,
			Path:          r.URL.Path,
			Route:         route,
			Status:        status,
			Fault:         string(fault),
			CorrelationID: truncate(r.Header.Get("correlation-id"), 64),
			Duration:      time.Since(start).Round(time.Microsecond).String(),
		})
		s.log.Debug("request", "route", route, "method", r.Method, "status", status,
			"fault", string(fault), "correlation_id", truncate(r.Header.Get("correlation-id"), 64),
			"duration", time.Since(start))
	})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// api checks the token and the instance, then runs h and writes its answer.
func (s *Server) api(h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, e := s.authorize(r)
		if e != nil {
			writeError(w, e)
			return
		}
		if e := s.networkPolicy(r); e != nil {
			writeError(w, e)
			return
		}
		now := s.now()
		s.rotateDue(now)
		r = r.WithContext(context.WithValue(r.Context(), subjectKey{}, sub))
		res := h(r, now)
		if res.err != nil {
			writeError(w, res.err)
			return
		}
		for _, hd := range res.header {
			w.Header().Set(hd[0], hd[1])
		}
		if res.body == nil {
			w.WriteHeader(res.status)
			return
		}
		writeJSON(w, res.status, res.body)
	})
}

// subjectKey carries the token's subject (the caller's identity) in a Key
// Protect request's context.
type subjectKey struct{}

// subject is the identity that sent a Key Protect request: its token's
// subject, an API key's id.
func subject(r *http.Request) string {
	sub, _ := r.Context().Value(subjectKey{}).(string)
	return sub
}

// authorize checks the token and the instance and returns the token's
// subject.
func (s *Server) authorize(r *http.Request) (string, *apiError) {
	h := r.Header.Get("authorization")
	if h == "" {
		return "", errUnauthorized()
	}
	tok, ok := bearer(h)
	if !ok {
		return "", errBearer()
	}
	sub, ok := s.verifyToken(tok, time.Now())
	if !ok {
		return "", errUnauthorized()
	}
	inst := r.Header.Get("bluemix-instance")
	if !isUUID(inst) {
		return "", errBadInstance()
	}
	if !strings.EqualFold(inst, s.cfg.InstanceID) {
		// A token without access to the named instance: the service
		// answers as for any resource the caller may not see.
		return "", errUnauthorized()
	}
	return sub, nil
}

// readBody reads a request body within maxBody. An empty body is returned
// as nil without error; callers decide whether that is allowed.
func readBody(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		if isTooLarge(err) {
			return nil, errTooLarge()
		}
		return nil, errBadBody("Request could not be processed", "the body could not be read")
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, nil
	}
	return b, nil
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
