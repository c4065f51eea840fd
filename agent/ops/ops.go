// SPDX-License-Identifier: Apache-2.0

// Package ops serves byokd's operator probes on a loopback HTTP listener:
// /healthz (the process works), /readyz (keys are served) and /metrics.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
)

// Server is the ops listener.
type Server struct {
	srv     *http.Server
	l       net.Listener
	machine *lock.Machine
	healthy atomic.Bool
	alive   atomic.Pointer[func() bool]
}

// Listen binds addr (e.g. 127.0.0.1:9464).
func Listen(addr string, m *lock.Machine, mt *metrics.Metrics) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{l: l, machine: m}
	s.healthy.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(mt.Registry, promhttp.HandlerOpts{}))
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.l.Addr().String() }

// SetHealthy marks the main loop healthy or stuck (/healthz answers 503).
func (s *Server) SetHealthy(ok bool) { s.healthy.Store(ok) }

// SetAlive makes /healthz ask alive at each request (the main loop's
// heartbeat) instead of the flag SetHealthy sets.
func (s *Server) SetAlive(alive func() bool) { s.alive.Store(&alive) }

// Serve answers until Shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the listener.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

type probe struct {
	Status string `json:"status"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

func write(w http.ResponseWriter, code int, p probe) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(p)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	st := s.machine.Status()
	ok := s.healthy.Load()
	if f := s.alive.Load(); f != nil {
		ok = (*f)()
	}
	if !ok {
		write(w, http.StatusServiceUnavailable, probe{Status: "unhealthy", State: st.State.String(), Reason: "main loop stuck"})
		return
	}
	write(w, http.StatusOK, probe{Status: "ok", State: st.State.String()})
}

// readyz is ready only while keys are served: unlocked, or degraded within
// the offline grace.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.machine.Status()
	if !st.State.Serving() {
		write(w, http.StatusServiceUnavailable, probe{Status: "not ready", State: st.State.String(), Reason: st.Reason})
		return
	}
	write(w, http.StatusOK, probe{Status: "ready", State: st.State.String(), Reason: st.Reason})
}
