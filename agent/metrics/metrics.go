// SPDX-License-Identifier: Apache-2.0

// Package metrics holds byokd's Prometheus metrics on a registry of its own.
// No metric carries a key, a token or an API key: labels are states, reasons,
// operations, outcomes, methods and gRPC codes.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are byokd's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	state          *prometheus.GaugeVec
	lockEvents     *prometheus.CounterVec
	kpRequests     *prometheus.CounterVec
	kpLatency      *prometheus.HistogramVec
	providerCalls  *prometheus.CounterVec
	lastCheck      prometheus.Gauge
	rootKeyExpired prometheus.Gauge
	rotations      prometheus.Counter
	wipeFailures   prometheus.Counter
	refused        *prometheus.CounterVec
	kmipRequests   *prometheus.CounterVec
	kmipRefused    *prometheus.CounterVec
}

// States lists the values of the byokd_state gauge's label.
var States = []string{"STARTING", "UNLOCKED", "DEGRADED", "LOCKED"}

// New registers byokd's metrics, with the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "byokd_state", Help: "1 for the node's current lock state, 0 for the others.",
		}, []string{"state"}),
		lockEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_lock_events_total", Help: "Transitions into LOCKED, by cause (key-disabled, access-refused, key-changed, ...).",
		}, []string{"cause"}),
		kpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_keyprotect_requests_total", Help: "Key Protect calls by operation and outcome (ok, transient, key-state, access, internal, refused).",
		}, []string{"operation", "outcome"}),
		kpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "byokd_keyprotect_request_duration_seconds", Help: "Key Protect call latency by operation.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"operation"}),
		providerCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_keyprovider_requests_total", Help: "Key provider gRPC calls by method and code.",
		}, []string{"method", "code"}),
		lastCheck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "byokd_last_successful_check_timestamp_seconds", Help: "Unix time of the last successful Key Protect check.",
		}),
		rootKeyExpired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "byokd_root_key_expired", Help: "1 when the root key is expired (deactivated): rotation and re-provisioning are impossible.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "byokd_rewraps_persisted_total", Help: "Re-wrapped keys persisted after a root key rotation.",
		}),
		wipeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "byokd_wipe_failures_total", Help: "Failed attempts to wipe the keys from the sealer.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_refused_callers_total", Help: "Key provider callers refused, by reason.",
		}, []string{"reason"}),
		kmipRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_kmip_requests_total", Help: "KMIP operations by operation and result (ok, or the KMIP result reason).",
		}, []string{"operation", "result"}),
		kmipRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "byokd_kmip_connections_refused_total", Help: "KMIP connections refused, by reason (tls, client-not-allowed, malformed, too-many).",
		}, []string{"reason"}),
	}
	r.MustRegister(m.state, m.lockEvents, m.kpRequests, m.kpLatency, m.providerCalls, m.lastCheck,
		m.rootKeyExpired, m.rotations, m.wipeFailures, m.refused, m.kmipRequests, m.kmipRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, s := range States {
		m.state.WithLabelValues(s).Set(0)
	}
	return m
}

// SetState marks the current state.
func (m *Metrics) SetState(state string) {
	for _, s := range States {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(s).Set(v)
	}
}

// Locked counts a transition into LOCKED.
func (m *Metrics) Locked(cause string) { m.lockEvents.WithLabelValues(cause).Inc() }

// WipeFailed counts a failed wipe.
func (m *Metrics) WipeFailed() { m.wipeFailures.Inc() }

// KeyProtect records one Key Protect call.
func (m *Metrics) KeyProtect(op, outcome string, d time.Duration) {
	m.kpRequests.WithLabelValues(op, outcome).Inc()
	m.kpLatency.WithLabelValues(op).Observe(d.Seconds())
}

// ProviderCall records one key provider call.
func (m *Metrics) ProviderCall(method, code string) {
	m.providerCalls.WithLabelValues(method, code).Inc()
}

// Checked records a successful check.
func (m *Metrics) Checked(t time.Time) { m.lastCheck.Set(float64(t.Unix())) }

// RootKeyExpired sets the expired flag.
func (m *Metrics) RootKeyExpired(expired bool) {
	v := 0.0
	if expired {
		v = 1
	}
	m.rootKeyExpired.Set(v)
}

// Rewrapped counts a persisted re-wrap.
func (m *Metrics) Rewrapped() { m.rotations.Inc() }

// Refused counts a refused caller.
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// KMIPRequest counts a KMIP operation by its result: "ok" or the KMIP
// result reason (ItemNotFound, GeneralFailure, ...).
func (m *Metrics) KMIPRequest(op, result string) { m.kmipRequests.WithLabelValues(op, result).Inc() }

// KMIPRefused counts a refused KMIP connection by reason.
func (m *Metrics) KMIPRefused(reason string) { m.kmipRefused.WithLabelValues(reason).Inc() }
