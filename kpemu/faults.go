// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as "250ms".
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "250ms", "2s", or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\" or nanoseconds")
	}
	*d = Duration(n)
	return nil
}

// Faults are the failures the emulator injects into the IAM and Key Protect
// routes (never into /_kpemu). Rates are fractions of requests, 0 to 1, drawn
// independently per request in this order: reset, error, throttle.
type Faults struct {
	// Latency is added before every answer, plus a random part up to Jitter.
	Latency Duration `json:"latency,omitempty"`
	Jitter  Duration `json:"jitter,omitempty"`
	// ErrorRate of requests get ErrorStatus (500 or 503; default 503).
	ErrorRate   float64 `json:"errorRate,omitempty"`
	ErrorStatus int     `json:"errorStatus,omitempty"`
	// ThrottleRate of requests get 429 with Retry-After (whole seconds,
	// default 1s).
	ThrottleRate float64  `json:"throttleRate,omitempty"`
	RetryAfter   Duration `json:"retryAfter,omitempty"`
	// ResetRate of connections are reset without an answer.
	ResetRate float64 `json:"resetRate,omitempty"`
	// Outage resets every connection: the service is unreachable.
	Outage bool `json:"outage,omitempty"`
	// RateLimit caps the instance at this many Key Protect requests per
	// second (a token bucket holding Burst, default the rate rounded up);
	// requests over it get 429 with Retry-After, as a service quota does.
	// It never applies to the IAM token route. Zero means no limit.
	RateLimit float64 `json:"rateLimit,omitempty"`
	Burst     int     `json:"burst,omitempty"`
	// Refusal answers requests itself, after the latency and before the
	// other faults, with one of the presets (RefuseNetworkPolicy, ...):
	// what a network policy, a wrong region, a proxy or a load balancer
	// answers. It never applies to the IAM token route unless Routes names
	// it.
	Refusal string `json:"refusal,omitempty"`
	// RefusalRate is the fraction of requests refused; 0 with a Refusal
	// refuses every one.
	RefusalRate float64 `json:"refusalRate,omitempty"`
	// DeletedAsDeactivated shows a deleted (not purged) key with state 3
	// (Deactivated) in GET key, metadata and list, still with deleted: true
	// and its deletion fields, as some of IBM's pages describe a deleted
	// key's first 24 hours. A client must read deleted, not only state.
	// Lists filter on the state shown. Routes does not limit it.
	DeletedAsDeactivated bool `json:"deletedAsDeactivated,omitempty"`
	// Routes limits the faults to these route names (see docs/kpemu.md);
	// empty means every route.
	Routes []string `json:"routes,omitempty"`
}

func (f Faults) validate() error {
	for name, r := range map[string]float64{"errorRate": f.ErrorRate, "throttleRate": f.ThrottleRate, "resetRate": f.ResetRate, "refusalRate": f.RefusalRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s must be between 0 and 1, got %v", name, r)
		}
	}
	if f.RateLimit < 0 || f.Burst < 0 {
		return fmt.Errorf("rateLimit and burst must not be negative")
	}
	if f.Burst > 0 && f.RateLimit == 0 {
		return fmt.Errorf("burst needs a rateLimit")
	}
	if f.ErrorStatus != 0 && f.ErrorStatus != 500 && f.ErrorStatus != 502 && f.ErrorStatus != 503 && f.ErrorStatus != 504 {
		return fmt.Errorf("errorStatus must be 500, 502, 503 or 504, got %d", f.ErrorStatus)
	}
	if f.Refusal != "" {
		if err := validRefusal(f.Refusal); err != nil {
			return err
		}
	} else if f.RefusalRate != 0 {
		return fmt.Errorf("refusalRate needs a refusal")
	}
	if f.Latency < 0 || f.Jitter < 0 || f.RetryAfter < 0 {
		return fmt.Errorf("durations must not be negative")
	}
	if time.Duration(f.Latency+f.Jitter) > time.Minute {
		return fmt.Errorf("latency plus jitter must be at most 1m")
	}
	return nil
}

type faultKind string

const (
	faultNone     faultKind = ""
	faultLatency  faultKind = "latency"
	faultError    faultKind = "error"
	faultThrottle faultKind = "throttle"
	faultReset    faultKind = "reset"
	faultOutage   faultKind = "outage"
	faultLimit    faultKind = "ratelimit"
	faultRefusal  faultKind = "refusal"
)

// routeIAMToken is the IAM token route's name: IAM is another service, never
// held to Key Protect's rate limit.
const routeIAMToken = "iam_token"

// answered reports whether the fault answered (or dropped) the request, so
// the route's handler must not run.
func (k faultKind) answered() bool {
	return k != faultNone && k != faultLatency
}

type faultState struct {
	mu sync.Mutex
	f  Faults
	// The rate limit's token bucket.
	tokens float64
	filled time.Time
}

// take spends one token of the rate limit. It returns 0 when the request may
// go on, else how long until a token is there.
func (fs *faultState) take(now time.Time) time.Duration {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	rate := fs.f.RateLimit
	if rate <= 0 {
		return 0
	}
	burst := float64(fs.f.Burst)
	if burst <= 0 {
		burst = math.Ceil(rate)
	}
	if fs.filled.IsZero() {
		fs.tokens = burst
	} else {
		fs.tokens = min(burst, fs.tokens+now.Sub(fs.filled).Seconds()*rate)
	}
	fs.filled = now
	if fs.tokens >= 1 {
		fs.tokens--
		return 0
	}
	return time.Duration((1 - fs.tokens) / rate * float64(time.Second))
}

// SetFaults replaces the injected faults; the zero Faults turns them off.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if f.RateLimit != s.faults.f.RateLimit || f.Burst != s.faults.f.Burst {
		s.faults.filled = time.Time{} // a new limit starts with a full bucket
	}
	s.faults.f = f
	return nil
}

// CurrentFaults returns the faults in force.
func (s *Server) CurrentFaults() Faults {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.f
}

func (s *Server) deletedAsDeactivated() bool {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.f.DeletedAsDeactivated
}

// applyFaults injects this request's fault, if any. For refusal, rate limit,
// error, throttle, reset and outage it has answered (or dropped) the request
// itself.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, route string) faultKind {
	f := s.CurrentFaults()
	if len(f.Routes) > 0 && !slices.Contains(f.Routes, route) {
		return faultNone
	}
	if f.Outage {
		resetConn(w)
		return faultOutage
	}
	kind := faultNone
	if d := time.Duration(f.Latency); d > 0 || f.Jitter > 0 {
		if f.Jitter > 0 {
			d += time.Duration(rand.Int64N(int64(f.Jitter)))
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		kind = faultLatency
	}
	if f.Refusal != "" && (route != routeIAMToken || slices.Contains(f.Routes, routeIAMToken)) &&
		(f.RefusalRate == 0 || rand.Float64() < f.RefusalRate) {
		writeRefusal(w, f.Refusal, route)
		return faultRefusal
	}
	if f.RateLimit > 0 && route != routeIAMToken {
		if wait := s.faults.take(time.Now()); wait > 0 {
			writeError(w, errThrottled(retryAfterSeconds(wait)))
			return faultLimit
		}
	}
	switch {
	case f.ResetRate > 0 && rand.Float64() < f.ResetRate:
		resetConn(w)
		return faultReset
	case f.ErrorRate > 0 && rand.Float64() < f.ErrorRate:
		status := f.ErrorStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		writeError(w, errServer(status))
		return faultError
	case f.ThrottleRate > 0 && rand.Float64() < f.ThrottleRate:
		ra := time.Duration(f.RetryAfter)
		if ra <= 0 {
			ra = time.Second
		}
		writeError(w, errThrottled(retryAfterSeconds(ra)))
		return faultThrottle
	}
	return kind
}

// retryAfterSeconds is a Retry-After value: whole seconds, rounded up.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// resetConn drops the client's connection without an answer; on TCP it sends
// a reset rather than a clean close, as a failing load balancer does.
func resetConn(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	conn, _, err := rc.Hijack()
	if err != nil {
		// HTTP/2 cannot be hijacked: abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// counters count requests per route, by status and by injected fault.
type counters struct {
	mu     sync.Mutex
	routes map[string]*RouteStats
}

// RouteStats counts one route's requests. Status 0 counts requests that were
// dropped without an answer.
type RouteStats struct {
	Requests int64            `json:"requests"`
	Status   map[string]int64 `json:"status"`
	Faults   map[string]int64 `json:"faults,omitempty"`
}

func (c *counters) add(route string, status int, fault faultKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.routes == nil {
		c.routes = map[string]*RouteStats{}
	}
	rs := c.routes[route]
	if rs == nil {
		rs = &RouteStats{Status: map[string]int64{}}
		c.routes[route] = rs
	}
	rs.Requests++
	rs.Status[strconv.Itoa(status)]++
	if fault != faultNone {
		if rs.Faults == nil {
			rs.Faults = map[string]int64{}
		}
		rs.Faults[string(fault)]++
	}
}

// Stats returns a copy of the request counters, by route name.
func (s *Server) Stats() map[string]RouteStats {
	s.counter.mu.Lock()
	defer s.counter.mu.Unlock()
	out := make(map[string]RouteStats, len(s.counter.routes))
	for k, v := range s.counter.routes {
		c := RouteStats{Requests: v.Requests, Status: map[string]int64{}}
		for sk, sv := range v.Status {
			c.Status[sk] = sv
		}
		if v.Faults != nil {
			c.Faults = map[string]int64{}
			for fk, fv := range v.Faults {
				c.Faults[fk] = fv
			}
		}
		out[k] = c
	}
	return out
}

// ResetStats zeroes the request counters and clears the request log.
func (s *Server) ResetStats() {
	s.counter.mu.Lock()
	s.counter.routes = nil
	s.counter.mu.Unlock()
	s.reqlog.reset()
}

// logEntry is one line of the request log: no body, token or API key.
type logEntry struct {
	Time          time.Time `json:"time"`
	Method        string    `json:"method"`
	Path          string    `json:"path"`
	Route         string    `json:"route"`
	Status        int       `json:"status"`
	Fault         string    `json:"fault,omitempty"`
	CorrelationID string    `json:"correlationId,omitempty"`
	Duration      string    `json:"duration"`
}

const requestLogSize = 1000

type requestLog struct {
	mu      sync.Mutex
	entries []logEntry
	next    int
}

func (l *requestLog) add(e logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) < requestLogSize {
		l.entries = append(l.entries, e)
		return
	}
	l.entries[l.next] = e
	l.next = (l.next + 1) % requestLogSize
}

func (l *requestLog) snapshot() []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]logEntry, 0, len(l.entries))
	out = append(out, l.entries[l.next:]...)
	out = append(out, l.entries[:l.next]...)
	return out
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries, l.next = nil, 0
}
