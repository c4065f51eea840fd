// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/byokd/byokd/internal/atomicfile"
)

// maxBody is the largest request body the emulator reads (1 MiB).
const maxBody = 1 << 20

// Config sets up an emulator.
type Config struct {
	// InstanceID is the Key Protect instance (a UUID) requests must name in
	// the bluemix-instance header.
	InstanceID string
	// APIKeys are the IAM API keys the token endpoint accepts.
	APIKeys []string
	// TokenTTL is how long an IAM access token lives (default 1h).
	TokenTTL time.Duration
	// StatePath, when set, keeps keys across restarts in this file.
	StatePath string
	// ActionCooldown is the wait the service enforces between a state change
	// and enable or restore (REQ_TOO_EARLY_ERR). Default 30s; negative
	// disables it.
	ActionCooldown time.Duration
	// RotateCooldown is the minimum time between two rotations of one key
	// (KEY_ROTATION_NOT_PERMITTED). Default 1h; negative disables it.
	RotateCooldown time.Duration
	// MonthLength is how long a rotation policy's month lasts (default 30
	// days, as the service counts one): a root key with an enabled policy of
	// interval_month N is rotated N*MonthLength after its last rotation.
	// Tests and demos shorten it.
	MonthLength time.Duration
	// Logger receives one line per request (route, status, correlation id;
	// never a body, token or API key). Default: discard.
	Logger *slog.Logger
}

// Server is a running emulator's state and HTTP handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler

	// mu guards the fields from keys to allowedIPs; a function named
	// ...MuHeld, or whose comment says so, must be called with it held.
	mu      sync.RWMutex
	keys    map[string]*key // by id, including destroyed keys until purged
	aliases map[string]string
	signKey []byte
	apiKeys map[string]apiKeyState // by apiKeyID
	offset  time.Duration          // virtual clock offset, moved by AdvanceClock
	// rotating holds the keys with an enabled rotation policy, by id.
	rotating map[string]*key
	// instPolicies are the instance policies by type; privateOnly,
	// allowedIPOn and allowedIPs are what networkPolicy enforces of them.
	instPolicies map[string]*instancePolicy
	privateOnly  bool
	allowedIPOn  bool
	allowedIPs   []netip.Prefix

	faults  faultState
	counter counters
	reqlog  requestLog
}

type apiKeyState struct {
	revoked bool // IAM issues tokens, Key Protect refuses them (access removed)
}

// New builds an emulator, loading StatePath when it exists.
func New(cfg Config) (*Server, error) {
	if !isUUID(cfg.InstanceID) {
		return nil, fmt.Errorf("kpemu: instance id %q is not a UUID", cfg.InstanceID)
	}
	if len(cfg.APIKeys) == 0 {
		return nil, errors.New("kpemu: at least one API key is required")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.ActionCooldown == 0 {
		cfg.ActionCooldown = 30 * time.Second
	}
	if cfg.RotateCooldown == 0 {
		cfg.RotateCooldown = time.Hour
	}
	if cfg.MonthLength <= 0 {
		cfg.MonthLength = 30 * 24 * time.Hour
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:          cfg,
		log:          log,
		keys:         map[string]*key{},
		aliases:      map[string]string{},
		apiKeys:      map[string]apiKeyState{},
		signKey:      randomBytes(32),
		rotating:     map[string]*key{},
		instPolicies: map[string]*instancePolicy{},
	}
	for _, k := range cfg.APIKeys {
		if k == "" {
			return nil, errors.New("kpemu: empty API key")
		}
		s.apiKeys[apiKeyID(k)] = apiKeyState{}
	}
	if cfg.StatePath != "" {
		st, err := loadState(cfg.StatePath, cfg.InstanceID)
		if err != nil {
			return nil, err
		}
		if st != nil {
			s.signKey = st.SigningKey
			for _, k := range st.Keys {
				s.keys[k.ID] = k
				for _, a := range k.Aliases {
					s.aliases[a.Name] = k.ID
				}
				s.trackRotation(k)
			}
			for _, p := range st.InstancePolicies {
				s.instPolicies[p.Type] = p
			}
			if err := s.refreshNetworkMuHeld(); err != nil {
				return nil, fmt.Errorf("kpemu: state file %s is corrupt: %w", cfg.StatePath, err)
			}
		} else if err := s.persistMuHeld(); err != nil {
			return nil, fmt.Errorf("kpemu: create state file: %w", err)
		}
	}
	s.handler = s.routes()
	return s, nil
}

// apiKeyID names an API key without revealing it (tokens carry this).
func apiKeyID(apiKey string) string {
	sum := sha256.Sum256([]byte("kpemu-apikey:" + apiKey))
	return "ServiceId-" + hex.EncodeToString(sum[:8])
}

// Handler serves the IAM token endpoint, /api/v2 and the /_kpemu admin API.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) now() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return time.Now().Add(s.offset).UTC()
}

// AdvanceClock moves the emulator's key clock forward, to expire keys or pass
// the service's waiting periods (enable, restore, purge, rotate) without
// sleeping. IAM tokens keep the wall clock.
func (s *Server) AdvanceClock(d time.Duration) {
	s.mu.Lock()
	if d > 0 {
		s.offset += d
	}
	s.mu.Unlock()
	// Rotation policies that came due rotate their keys at once.
	s.rotateDue(s.now())
}

// SetAPIKey adds an API key, or changes what it may do: revoked keeps it
// valid at IAM but removes its access to the instance (Key Protect answers
// 401); remove makes IAM forget it.
func (s *Server) SetAPIKey(apiKey string, revoked, remove bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := apiKeyID(apiKey)
	if remove {
		delete(s.apiKeys, id)
		return
	}
	s.apiKeys[id] = apiKeyState{revoked: revoked}
}

// persistMuHeld writes the state file; s.mu must be held for writing (or the
// server not yet shared).
func (s *Server) persistMuHeld() error {
	if s.cfg.StatePath == "" {
		return nil
	}
	st := stateFile{Schema: stateSchema, InstanceID: s.cfg.InstanceID, SigningKey: s.signKey}
	for _, k := range s.keys {
		st.Keys = append(st.Keys, k)
	}
	for _, t := range instancePolicyTypes {
		if p := s.instPolicies[t]; p != nil {
			st.InstancePolicies = append(st.InstancePolicies, p)
		}
	}
	b, err := jsonMarshalIndent(st)
	if err != nil {
		return err
	}
	return atomicfile.Write(s.cfg.StatePath, b, 0o600)
}

// Instance is an emulator listening on a TCP address.
type Instance struct {
	*Server
	URL  string
	srv  *http.Server
	done chan error
	// The rotation policies' ticker: stop ends it, ticked reports its end.
	stop     chan struct{}
	ticked   chan struct{}
	stopOnce sync.Once
}

// Listen starts an emulator on addr ("127.0.0.1:0" picks a free port). With
// certFile and keyFile it serves HTTPS.
func Listen(cfg Config, addr, certFile, keyFile string) (*Instance, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kpemu: listen %s: %w", addr, err)
	}
	scheme := "http"
	if certFile != "" || keyFile != "" {
		scheme = "https"
	}
	in := &Instance{
		Server: s,
		URL:    scheme + "://" + l.Addr().String(),
		srv: &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		done:   make(chan error, 1),
		stop:   make(chan struct{}),
		ticked: make(chan struct{}),
	}
	go in.tick(min(max(s.cfg.MonthLength/10, 10*time.Millisecond), time.Minute))
	go func() {
		var err error
		if scheme == "https" {
			err = in.srv.ServeTLS(l, certFile, keyFile)
		} else {
			err = in.srv.Serve(l)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		in.done <- err
	}()
	return in, nil
}

// tick rotates the keys whose rotation policy is due, every period, also
// when no request comes, until Close.
func (in *Instance) tick(period time.Duration) {
	defer close(in.ticked)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			in.rotateDue(in.now())
		case <-in.stop:
			return
		}
	}
}

// Close stops the emulator, letting requests in flight finish for up to ctx.
func (in *Instance) Close(ctx context.Context) error {
	in.stopOnce.Do(func() { close(in.stop) })
	<-in.ticked
	err := in.srv.Shutdown(ctx)
	if err != nil {
		_ = in.srv.Close()
	}
	if serr := <-in.done; err == nil {
		err = serr
	}
	return err
}

// Done reports the server's end (nil after Close).
func (in *Instance) Done() <-chan error { return in.done }

// bearer extracts the token of an "authorization: Bearer X" header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}
