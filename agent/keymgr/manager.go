// SPDX-License-Identifier: Apache-2.0

// Package keymgr manages the node's data encryption key: it provisions,
// unlocks, proves and re-wraps it through Key Protect, keeps the node on
// the one key it has served, and turns Key Protect's answers into lock
// events. Its Scheduler decides when each round runs.
package keymgr

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/keyprotect"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/internal/clock"
)

// KeyProtect is what the manager asks of Key Protect (*keyprotect.Client).
type KeyProtect interface {
	Metadata(ctx context.Context) (*keyprotect.KeyInfo, error)
	Unwrap(ctx context.Context, ciphertext string, aad []string) (*keyprotect.Unwrapped, error)
	WrapNew(ctx context.Context, aad []string) (*keyprotect.Wrapped, error)
}

// Store keeps the wrapped key and the key identity (*wdek.Store).
type Store interface {
	Load() (*wdek.Record, error)
	Create(*wdek.Record) error
	Replace(*wdek.Record) error
	Path() string
	LoadIdentity() (*wdek.KeyIdentity, error)
	LoadPreviousIdentity() (*wdek.KeyIdentity, error)
	RecordIdentity(*wdek.KeyIdentity) error
	ReplaceIdentity(*wdek.KeyIdentity) error
	RetireIdentity() error
	IdentityPath() string
}

// Sealer holds the DEK (crypto/seal).
type Sealer interface {
	Seal(ctx context.Context, dek []byte) error
	Derive(ctx context.Context, info []byte, out []byte) error
}

// Config sets up a manager.
type Config struct {
	KP         KeyProtect
	Store      Store
	Sealer     Sealer
	Machine    *lock.Machine
	RootKeyID  string
	InstanceID string
	ClusterID  string
	Provision  bool
	// ProofInterval is how often an unwrap proves the key, beyond its
	// metadata.
	ProofInterval time.Duration
	// OfflineGrace is how long the node serves while Key Protect cannot be
	// reached.
	OfflineGrace time.Duration
	// ConfirmWindow is how long an access refusal (401, 403, IAM) or a Key
	// Protect internal error (422) must persist before the node locks; it
	// is never longer than OfflineGrace.
	ConfirmWindow time.Duration
	LockOnExpired bool
	// WipeTimeout bounds a wipe (default 10 s).
	WipeTimeout time.Duration
	// RoundTimeout bounds a round's Key Protect calls and sealer work,
	// wipes apart (default 1 min), so that a round that hangs ends with a
	// transient failure rather than stopping the loop.
	RoundTimeout time.Duration
	Clock        clock.Clock
	Log          *slog.Logger
	Metrics      *metrics.Metrics
}

// Manager runs the key operations. Step runs one round; the operator
// actions (AcceptKey, ForgetKey) wait for a round to end. It is safe for
// concurrent use.
type Manager struct {
	cfg  Config
	sem  chan struct{} // held through a round or an operator action
	kick func()

	// Owned by whoever holds sem.
	identity  *wdek.KeyIdentity // the key this node serves; nil until recorded
	held      *wdek.Record      // the wrapped key last unwrapped to identity
	version   string            // root key version of held's ciphertext
	lastOK    time.Time         // last time Key Protect answered a round well
	lastProof time.Time
	sticky    *sticky  // a lock only the key file or an operator clears
	tried     string   // stamp of the wrapped key file the round used
	refusing  *refusal // refusals being confirmed; nil after any other answer

	reseal atomic.Bool
}

// refusal tracks answers of one class that lock only when they persist:
// every answer since first was one of them.
type refusal struct {
	class keyprotect.Class
	first time.Time
	count int
}

// sticky is a lock that polling does not clear: the wrapped key file holds
// another key, is refused by Key Protect, or is missing. It is retried only
// when the file changes (stamp) or an operator acts.
type sticky struct {
	cause   audit.Action // the lock's cause and its audit action
	reason  string
	action  string
	offered string // full fingerprint of the other key, for key-changed
	stamp   string // the wrapped key file when the lock was decided
}

// New returns a manager; it reads nothing until its first round.
func New(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.ConfirmWindow > cfg.OfflineGrace {
		cfg.ConfirmWindow = cfg.OfflineGrace
	}
	if cfg.WipeTimeout <= 0 {
		cfg.WipeTimeout = 10 * time.Second
	}
	if cfg.RoundTimeout <= 0 {
		cfg.RoundTimeout = time.Minute
	}
	return &Manager{cfg: cfg, sem: make(chan struct{}, 1), kick: func() {}}
}

// AAD binds a wrapped key to its cluster. byokd always unwraps with the AAD
// of its configured cluster id; the copy in the wrapped key file is only
// checked against it.
func AAD(clusterID string) []string { return []string{"byokd", "cluster:" + clusterID} }

// identityInfo is the derivation input of the key fingerprint. It cannot be
// a data key's info: those are "byokd/v1/<cluster>/<key id>" with a '/'
// after the cluster id, which this has not.
var identityInfo = []byte("byokd/v1/key-identity")

// Fingerprint returns the keyed fingerprint of a DEK: HKDF-Expand (one
// HMAC-SHA256) under the DEK of a fixed label, in hex. It names the key
// without revealing it, and a sealer computes it without handing the key
// out.
func Fingerprint(dek []byte) (string, error) {
	fp, err := datakey.Derive(dek, identityInfo)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(fp[:]), nil
}

// Reseal asks for the DEK to be unwrapped and sealed again at once: the
// sealer said its sealed key is void (a CPACF protected key after the
// firmware wrapping key changed).
func (m *Manager) Reseal() {
	m.reseal.Store(true)
	m.kick()
}

// Outcome is what a round came to, for the scheduler.
type Outcome int

// The outcomes.
const (
	// Served: Key Protect answered well; the node serves.
	Served Outcome = iota + 1
	// Locked: the node is locked by an answer or a local failure; poll at
	// the interval.
	Locked
	// Retry: Key Protect could not be reached, or refused in a way that
	// must be confirmed; retry with backoff.
	Retry
)

// Result is one round's outcome.
type Result struct {
	Outcome    Outcome
	RetryAfter time.Duration
	// Deadline, when set, is when the next round must run at the latest:
	// the end of the offline grace or of a confirmation window.
	Deadline time.Time
}

// Step runs one round: unlock when not serving, else reseal, prove or
// check, and reports it to the lock machine.
func (m *Manager) Step(ctx context.Context) Result {
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	st := m.cfg.Machine.Status()
	if st.WipeError != "" {
		wctx, cancel := context.WithTimeout(ctx, m.cfg.WipeTimeout)
		if err := m.cfg.Machine.Wipe(wctx); err != nil {
			m.cfg.Log.Error("keys still not wiped", "err", err)
			m.wipeFailed()
		} else {
			audit.Info(m.cfg.Log, "keys wiped after an earlier failure", audit.Wipe)
		}
		cancel()
	}
	if m.sticky != nil {
		stamp := m.stampNow()
		if stamp == m.sticky.stamp {
			return Result{Outcome: Locked}
		}
		m.cfg.Log.Info("the wrapped key file changed; trying it", "path", m.cfg.Store.Path())
		m.sticky = nil
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.RoundTimeout)
	defer cancel()
	var err error
	var op string
	switch {
	case !st.State.Serving():
		op = "unlock"
		m.reseal.Store(false)
		err = m.unlock(rctx)
	case m.reseal.Swap(false):
		op = "reseal"
		err = m.unlock(rctx)
	case m.cfg.Clock.Now().Sub(m.lastProof) >= m.cfg.ProofInterval:
		op = "proof"
		err = m.proof(rctx)
	default:
		op = "check"
		err = m.check(rctx)
	}
	return m.report(ctx, op, err)
}

// report turns a round's outcome into a lock event and a Result.
func (m *Manager) report(ctx context.Context, op string, err error) Result {
	now := m.cfg.Clock.Now()
	var le *localError
	var se *stickyError
	v := keyprotect.Classify(err)
	if m.refusing != nil && m.refusing.class != v.Class {
		// Any other answer ends a run of refusals: a refusal must
		// persist, unbroken, over the whole window to lock.
		m.refusing = nil
	}
	switch {
	case err == nil:
		m.lastOK = now
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.Checked(now)
		}
		ev := lock.EvCheckOK
		if op == "unlock" || op == "reseal" {
			ev = lock.EvUnlocked
		}
		m.fire(ctx, ev, lock.Why{})
		return Result{Outcome: Served}
	case errors.As(err, &se):
		se.s.stamp = m.tried
		m.sticky = se.s
		audit.Error(m.cfg.Log, "locked until an operator acts", se.s.cause, audit.Op(op),
			audit.Reason(se.s.reason), audit.OperatorAction(se.s.action), audit.Err(err))
		m.fire(ctx, lock.EvAuthoritative, lock.Why{Reason: se.s.reason, Cause: string(se.s.cause), Action: se.s.action,
			Offered: wdek.ShortFingerprint(se.s.offered)})
		return Result{Outcome: Locked}
	case errors.As(err, &le):
		// The stored key, the key identity or the sealer, not Key
		// Protect: lock and say so.
		m.cfg.Log.Error("cannot serve the key", "op", op, "reason", le.reason, "err", err)
		m.fire(ctx, lock.EvAuthoritative, lock.Why{Reason: le.reason, Cause: le.cause})
		return Result{Outcome: Locked}
	case v.Class == keyprotect.Refused:
		s := &sticky{cause: audit.WrappedKeyRefused, stamp: m.tried,
			reason: v.Reason,
			action: fmt.Sprintf("restore the node's own wrapped key to %s (the previous version is kept as %s%s); byokd tries again when the file changes",
				m.cfg.Store.Path(), m.cfg.Store.Path(), wdek.PrevSuffix)}
		m.sticky = s
		audit.Error(m.cfg.Log, "wrapped key refused by the root key; locked until the file changes",
			s.cause, audit.Op(op), audit.Path(m.cfg.Store.Path()), audit.Err(err))
		m.fire(ctx, lock.EvAuthoritative, lock.Why{Reason: s.reason, Cause: string(s.cause), Action: s.action})
		return Result{Outcome: Locked}
	case v.Class == keyprotect.KeyState:
		m.cfg.Log.Warn("root key refused", "op", op, "reason", v.Reason, "err", err)
		m.fire(ctx, lock.EvAuthoritative, lock.Why{Reason: v.Reason, Cause: v.Cause})
		return Result{Outcome: Locked}
	case v.Class == keyprotect.Access || v.Class == keyprotect.Internal:
		return m.confirmRefusal(ctx, op, v, err, now)
	default:
		return m.transient(ctx, op, v, err, now, time.Time{})
	}
}

// confirmRefusal handles an answer that locks only when it persists over
// the confirmation window: an access refusal, which a network policy or a
// wrong region also produce on every node at once, or an internal error
// of Key Protect.
func (m *Manager) confirmRefusal(ctx context.Context, op string, v keyprotect.Verdict, err error, now time.Time) Result {
	if m.refusing == nil {
		m.refusing = &refusal{class: v.Class, first: now}
	}
	r := m.refusing
	r.count++
	window := m.cfg.ConfirmWindow
	deadline := r.first.Add(window)
	what := "possible causes: " + keyprotect.AccessCauses()
	if v.Class == keyprotect.Internal {
		what = "Key Protect's HSM failed; contact IBM support if it persists"
	}
	if !now.Before(deadline) && (r.count >= 2 || window == 0) {
		reason := fmt.Sprintf("%s for %s (%d answers): %s", v.Reason, window, r.count, what)
		m.cfg.Log.Warn("refusal confirmed; locking", "op", op, "reason", reason, "err", err)
		m.fire(ctx, lock.EvAuthoritative, lock.Why{Reason: reason, Cause: v.Cause})
		return Result{Outcome: Locked}
	}
	reason := fmt.Sprintf("%s; locking at %s unless Key Protect answers (%s)",
		v.Reason, deadline.UTC().Format(time.TimeOnly+" MST"), what)
	if !m.cfg.Machine.Status().State.Serving() {
		reason = fmt.Sprintf("%s (%s)", v.Reason, what)
	}
	return m.transient(ctx, op, keyprotect.Verdict{Class: v.Class, Reason: reason, Cause: v.Cause, RetryAfter: v.RetryAfter}, err, now, deadline)
}

// transient degrades a serving node, or locks it once the offline grace
// has run out, and asks for a retry by the deadline.
func (m *Manager) transient(ctx context.Context, op string, v keyprotect.Verdict, err error, now, deadline time.Time) Result {
	m.cfg.Log.Warn("key protect did not answer well", "op", op, "class", v.Class.String(), "reason", v.Reason, "err", err)
	st := m.cfg.Machine.Status().State
	grace := m.cfg.OfflineGrace
	if st.Serving() {
		end := m.lastOK.Add(grace)
		if !now.Before(end) {
			m.fire(ctx, lock.EvGraceExpired, lock.Why{
				Reason: fmt.Sprintf("Key Protect unreachable for longer than offline_grace (%s): %s", grace, v.Reason),
				Cause:  "offline-grace-expired"})
			return Result{Outcome: Locked}
		}
		if deadline.IsZero() || end.Before(deadline) {
			deadline = end
		}
	}
	m.fire(ctx, lock.EvTransient, lock.Why{Reason: v.Reason, Cause: v.Cause})
	return Result{Outcome: Retry, RetryAfter: v.RetryAfter, Deadline: deadline}
}

// fire reports an event to the lock machine; a failed wipe is logged and
// counted, and the node stays locked.
func (m *Manager) fire(ctx context.Context, ev lock.Event, why lock.Why) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.WipeTimeout)
	defer cancel()
	if _, err := m.cfg.Machine.Fire(wctx, ev, why); err != nil {
		m.cfg.Log.Error("keys could not be wiped; the node stays locked and byokd retries the wipe every round", "err", err)
		m.wipeFailed()
	}
}

func (m *Manager) wipeFailed() {
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.WipeFailed()
	}
}

// localError is a failure on this node (wrapped key file, key identity,
// sealer) rather than in Key Protect. It locks until a round succeeds.
type localError struct {
	reason string
	cause  string
	err    error
}

func (e *localError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func local(cause, reason string, err error) error {
	return &localError{reason: reason, cause: cause, err: err}
}

// stickyError is a lock that polling does not clear.
type stickyError struct{ s *sticky }

func (e *stickyError) Error() string { return e.s.reason }

// timed runs one Key Protect call and records it in the metrics.
func (m *Manager) timed(op string, fn func() error) error {
	start := m.cfg.Clock.Now()
	err := fn()
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.KeyProtect(op, keyprotect.Classify(err).Class.String(), m.cfg.Clock.Now().Sub(start))
	}
	return err
}

// stamp names the content of the wrapped key file, so a sticky lock can
// tell whether an operator changed it.
func stamp(rec *wdek.Record, err error) string {
	switch {
	case errors.Is(err, wdek.ErrNotExist):
		return "missing"
	case err != nil:
		return "unusable: " + err.Error()
	}
	h := sha256.New()
	for _, s := range append([]string{rec.RootKeyID, rec.InstanceID, rec.ClusterID, rec.Ciphertext}, rec.AAD...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (m *Manager) stampNow() string { return stamp(m.cfg.Store.Load()) }

// loadIdentity reads the recorded key identity once.
func (m *Manager) loadIdentity() error {
	if m.identity != nil {
		return nil
	}
	id, err := m.cfg.Store.LoadIdentity()
	switch {
	case errors.Is(err, wdek.ErrNotExist):
		return nil
	case err != nil:
		return local("identity-unusable", "key identity file unusable", err)
	}
	if id.RootKeyID != m.cfg.RootKeyID || id.InstanceID != m.cfg.InstanceID || id.ClusterID != m.cfg.ClusterID {
		return local("identity-foreign", "key identity file belongs to another root key, instance or cluster",
			fmt.Errorf("%s records root key %s, instance %s, cluster %s; config says %s, %s, %s", m.cfg.Store.IdentityPath(),
				id.RootKeyID, id.InstanceID, id.ClusterID, m.cfg.RootKeyID, m.cfg.InstanceID, m.cfg.ClusterID))
	}
	m.identity = id
	m.publishIdentity()
	return nil
}

func (m *Manager) publishIdentity() {
	fp, gen := "", uint32(0)
	if m.identity != nil {
		fp, gen = m.identity.Short(), m.identity.Generation
	}
	m.cfg.Machine.Update(func(s *lock.Status) { s.Fingerprint, s.Generation = fp, gen })
}

// load reads the stored wrapped key, writes it back from the key the node
// holds when it went missing, or provisions one when allowed and the node
// never served a key. fresh is set when it provisioned. A node that holds
// a wrapped key (it serves, or served since it started) goes on with it
// when the file is unusable or belongs to another root key, instance or
// cluster, and warns: that file is never unwrapped, and byokd will not
// start on it.
func (m *Manager) load(ctx context.Context) (rec *wdek.Record, fresh *keyprotect.Wrapped, err error) {
	rec, err = m.cfg.Store.Load()
	if errors.Is(err, wdek.ErrNotExist) && m.held != nil {
		switch err = m.cfg.Store.Create(m.held); {
		case err == nil:
			audit.Warn(m.cfg.Log, "the wrapped key file was missing; wrote it back from the wrapped key this node holds",
				audit.RestoreWrappedKey, audit.Path(m.cfg.Store.Path()), audit.Fingerprint(m.identity.Short()))
			rec = m.held
		case errors.Is(err, wdek.ErrExists):
			// Restored by an operator meanwhile: that file counts.
			rec, err = m.cfg.Store.Load()
		}
	}
	m.tried = stamp(rec, err)
	switch {
	case err == nil:
		err = m.checkRecord(rec)
	case !errors.Is(err, wdek.ErrNotExist):
		err = local("wrapped-key-unusable", "wrapped key file unusable", err)
	}
	var le *localError
	if errors.As(err, &le) && m.held != nil {
		m.warnFile(fmt.Sprintf("%s: %s; serving from the wrapped key held in memory — fix or restore the file before byokd restarts, "+
			"it will not start on it", le.reason, le.err))
		return m.held, nil, nil
	}
	m.warnFile("")
	switch {
	case err == nil:
		return rec, nil, nil
	case errors.Is(err, wdek.ErrNotExist) && m.identity != nil:
		return nil, nil, &stickyError{&sticky{
			cause: audit.WrappedKeyMissing,
			reason: fmt.Sprintf("the wrapped key file %s is missing; this node served data key %s (generation %d) and never provisions over it",
				m.cfg.Store.Path(), m.identity.Short(), m.identity.Generation),
			action: fmt.Sprintf("restore %s from the node's backup (a copy may be at %s%s); byokd unlocks once it unwraps to key %s. "+
				"To give the key and its data up instead: byokctl forget-key %s", m.cfg.Store.Path(), m.cfg.Store.Path(), wdek.PrevSuffix,
				m.identity.Short(), m.identity.Short()),
		}}
	case errors.Is(err, wdek.ErrNotExist) && !m.cfg.Provision:
		return nil, nil, local("wrapped-key-missing", "no wrapped key at "+m.cfg.Store.Path()+" and provision = false", err)
	case errors.Is(err, wdek.ErrNotExist):
		return m.provision(ctx)
	}
	return nil, nil, err
}

// checkRecord refuses a wrapped key file of another root key, instance or
// cluster, or bound to another cluster's AAD, and names a file that could
// not be read.
func (m *Manager) checkRecord(rec *wdek.Record) error {
	if rec.RootKeyID != m.cfg.RootKeyID || rec.InstanceID != m.cfg.InstanceID || rec.ClusterID != m.cfg.ClusterID {
		return local("wrapped-key-foreign", "wrapped key file belongs to another root key, instance or cluster",
			fmt.Errorf("%s holds root key %s, instance %s, cluster %s; config says %s, %s, %s",
				m.cfg.Store.Path(), rec.RootKeyID, rec.InstanceID, rec.ClusterID, m.cfg.RootKeyID, m.cfg.InstanceID, m.cfg.ClusterID))
	}
	if want := AAD(m.cfg.ClusterID); !slices.Equal(rec.AAD, want) {
		return local("wrapped-key-foreign", "wrapped key file is bound to another cluster",
			fmt.Errorf("%s says its aad is %q; cluster_id %q gives %q, which byokd always unwraps with", m.cfg.Store.Path(), rec.AAD, m.cfg.ClusterID, want))
	}
	return nil
}

// warnFile sets, or with "" clears, the warning about the wrapped key file.
func (m *Manager) warnFile(w string) {
	m.cfg.Machine.Update(func(s *lock.Status) {
		s.Warnings = slices.DeleteFunc(s.Warnings, func(x string) bool { return strings.HasPrefix(x, warnFilePrefix) })
		if w != "" {
			s.Warnings = append(s.Warnings, warnFilePrefix+w)
		}
	})
	if w != "" {
		m.cfg.Log.Error("the wrapped key file is unusable; serving from memory", "path", m.cfg.Store.Path(), "warning", w)
	}
}

const warnFilePrefix = "wrapped key file: "

// provision has Key Protect create a DEK and stores it wrapped, before the
// DEK is used for anything: a crash in between loses nothing.
func (m *Manager) provision(ctx context.Context) (*wdek.Record, *keyprotect.Wrapped, error) {
	var w *keyprotect.Wrapped
	err := m.timed("wrap", func() error {
		var err error
		w, err = m.cfg.KP.WrapNew(ctx, AAD(m.cfg.ClusterID))
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	now := m.cfg.Clock.Now().UTC()
	rec := &wdek.Record{
		Schema: wdek.Schema, RootKeyID: m.cfg.RootKeyID, InstanceID: m.cfg.InstanceID, ClusterID: m.cfg.ClusterID,
		Ciphertext: w.Ciphertext, KeyVersion: w.KeyVersion, AAD: AAD(m.cfg.ClusterID), Created: now, Updated: now,
	}
	if err := m.cfg.Store.Create(rec); err != nil {
		w.DEK.Destroy()
		return nil, nil, local("wrapped-key-unusable", "store the new wrapped key", err)
	}
	m.tried = stamp(rec, nil)
	audit.Info(m.cfg.Log, "provisioned a new data encryption key", audit.Provision, audit.RootKeyID(m.cfg.RootKeyID),
		audit.KeyVersion(w.KeyVersion), audit.WrappedFingerprint(rec.Fingerprint()), audit.Path(m.cfg.Store.Path()))
	return rec, w, nil
}

// checkMetadata reads the root key's state.
func (m *Manager) checkMetadata(ctx context.Context) (*keyprotect.KeyInfo, error) {
	var info *keyprotect.KeyInfo
	err := m.timed("metadata", func() error {
		var err error
		info, err = m.cfg.KP.Metadata(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := keyprotect.CheckUsable(info); err != nil {
		return nil, err
	}
	expired := info.State == keyprotect.StateDeactivated
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.RootKeyExpired(expired)
	}
	m.cfg.Machine.Update(func(s *lock.Status) {
		s.Warnings = slices.DeleteFunc(s.Warnings, func(w string) bool { return w == warnExpired })
		if expired {
			s.Warnings = append(s.Warnings, warnExpired)
		}
	})
	if expired {
		if m.cfg.LockOnExpired {
			return nil, &keyprotect.StateError{KeyID: info.ID, State: info.State}
		}
		m.cfg.Log.Warn("root key expired: it still unwraps, but rotation and re-provisioning are impossible; rotate to a new root key",
			"root_key_id", m.cfg.RootKeyID)
	}
	return info, nil
}

const warnExpired = "root key expired (deactivated): it still unwraps, but rotation and re-provisioning are impossible"

// unwrap has Key Protect unwrap the stored key with the configured AAD.
func (m *Manager) unwrap(ctx context.Context, rec *wdek.Record) (*keyprotect.Unwrapped, error) {
	var u *keyprotect.Unwrapped
	err := m.timed("unwrap", func() error {
		var err error
		u, err = m.cfg.KP.Unwrap(ctx, rec.Ciphertext, AAD(m.cfg.ClusterID))
		return err
	})
	return u, err
}

// verify checks that dek is the node's key, recording it as the node's key
// when none is recorded yet.
func (m *Manager) verify(dek []byte) error {
	fp, err := Fingerprint(dek)
	if err != nil {
		return local("sealer", "fingerprint the data encryption key", err)
	}
	if m.identity == nil {
		// After an operator gave a key up, the next one gets the next
		// generation, so a plugin that knew the old one sees the change.
		gen := uint32(1)
		switch prev, err := m.cfg.Store.LoadPreviousIdentity(); {
		case err == nil:
			gen = prev.Generation + 1
		case !errors.Is(err, wdek.ErrNotExist):
			return local("identity-unusable", "the previous key identity file is unusable, so the next generation is unknown", err)
		}
		id := &wdek.KeyIdentity{Schema: wdek.Schema, Fingerprint: fp, Generation: gen, RootKeyID: m.cfg.RootKeyID,
			InstanceID: m.cfg.InstanceID, ClusterID: m.cfg.ClusterID, Recorded: m.cfg.Clock.Now().UTC()}
		if err := m.cfg.Store.RecordIdentity(id); err != nil {
			return local("identity-unusable", "record the key identity", err)
		}
		m.identity = id
		m.publishIdentity()
		audit.Info(m.cfg.Log, "recorded the node's data encryption key", audit.RecordIdentity,
			audit.Fingerprint(id.Short()), audit.Generation(id.Generation), audit.Path(m.cfg.Store.IdentityPath()))
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(fp), []byte(m.identity.Fingerprint)) == 1 {
		return nil
	}
	return &stickyError{&sticky{
		cause:   audit.KeyChanged,
		offered: fp,
		reason: fmt.Sprintf("the wrapped key file %s unwraps to data key %s, not to %s (generation %d) that this node serves: "+
			"copied from another node or restored from the wrong backup?", m.cfg.Store.Path(), wdek.ShortFingerprint(fp),
			m.identity.Short(), m.identity.Generation),
		action: fmt.Sprintf("restore the node's own %s (byokd unlocks once it unwraps to %s), or, to serve the other key and lose "+
			"access to data written under %s: byokctl accept-key %s %s", m.cfg.Store.Path(), m.identity.Short(),
			m.identity.Short(), m.identity.Short(), wdek.ShortFingerprint(fp)),
	}}
}

// unlock loads (or provisions) the wrapped key, checks the root key,
// unwraps, checks the key is the node's and seals it.
func (m *Manager) unlock(ctx context.Context) error {
	if err := m.loadIdentity(); err != nil {
		return err
	}
	rec, fresh, err := m.load(ctx)
	if err != nil {
		return err
	}
	info, err := m.checkMetadata(ctx)
	if err != nil {
		if fresh != nil {
			fresh.DEK.Destroy()
		}
		return err
	}
	var dek *secmem.Buffer
	var u *keyprotect.Unwrapped
	if fresh != nil {
		dek = fresh.DEK
	} else {
		if u, err = m.unwrap(ctx, rec); err != nil {
			return err
		}
		dek = u.DEK
	}
	defer dek.Destroy()
	if err := m.verify(dek.Bytes()); err != nil {
		return err
	}
	rec, version := m.keep(rec, u, info.Version)
	if err := m.cfg.Sealer.Seal(ctx, dek.Bytes()); err != nil {
		return local("sealer", "seal the data encryption key", err)
	}
	m.held, m.version, m.lastProof = rec, version, m.cfg.Clock.Now()
	m.cfg.Machine.Update(func(s *lock.Status) { s.KeyVersion = version })
	audit.Info(m.cfg.Log, "unlocked", audit.Unlock, audit.RootKeyID(m.cfg.RootKeyID),
		audit.KeyVersion(version), audit.Fingerprint(m.identity.Short()), audit.Generation(m.identity.Generation))
	return nil
}

// keep persists a re-wrapped key when the unwrap answer carries one, and
// returns the record now stored with the root key version of its
// ciphertext: from the unwrap answer itself, never from metadata read
// before it, which a rotation in between makes stale — metadata's version
// only when the answer names none.
func (m *Manager) keep(rec *wdek.Record, u *keyprotect.Unwrapped, metaVersion string) (*wdek.Record, string) {
	if u == nil {
		return rec, rec.KeyVersion
	}
	version := u.StoredVersion()
	if version == "" {
		version = metaVersion
	}
	if u.Rewrapped == "" {
		return rec, version
	}
	next := *rec
	next.Ciphertext = u.Rewrapped
	next.KeyVersion = version
	next.Updated = m.cfg.Clock.Now().UTC()
	if err := m.cfg.Store.Replace(&next); err != nil {
		// The old ciphertext still unwraps; the next check sees the
		// version differ and tries again.
		m.cfg.Log.Error("persist re-wrapped key; keeping the old one", "err", err, "path", m.cfg.Store.Path())
		return rec, rec.KeyVersion
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.Rewrapped()
	}
	audit.Info(m.cfg.Log, "persisted the key re-wrapped under the rotated root key", audit.Rotation,
		audit.RootKeyID(m.cfg.RootKeyID), audit.KeyVersion(next.KeyVersion), audit.PreviousVersion(rec.KeyVersion),
		audit.WrappedFingerprint(next.Fingerprint()))
	m.tried = stamp(&next, nil)
	return &next, version
}

// check reads the root key's metadata; a new key version means the root
// key was rotated, and a proof unwrap then fetches the re-wrapped key.
func (m *Manager) check(ctx context.Context) error {
	if m.stampNow() != m.tried {
		// dek.json went missing or changed since the last round: prove
		// (and write back) now, not at the next proof.
		m.cfg.Log.Info("the wrapped key file changed or went missing; proving the key now", "path", m.cfg.Store.Path())
		return m.proof(ctx)
	}
	info, err := m.checkMetadata(ctx)
	if err != nil {
		return err
	}
	if info.Version != "" && info.Version != m.version {
		m.cfg.Log.Info("root key rotated; re-wrapping the stored key", "root_key_id", m.cfg.RootKeyID,
			"key_version", info.Version, "stored_version", m.version)
		return m.proof(ctx)
	}
	return nil
}

// proof unwraps the stored key again and checks it is the node's key and
// the sealed one; it persists a re-wrapped key.
func (m *Manager) proof(ctx context.Context) error {
	rec, _, err := m.load(ctx)
	if err != nil {
		return err
	}
	info, err := m.checkMetadata(ctx)
	if err != nil {
		return err
	}
	u, err := m.unwrap(ctx, rec)
	if err != nil {
		return err
	}
	defer u.DEK.Destroy()
	if err := m.verify(u.DEK.Bytes()); err != nil {
		return err
	}
	var got [32]byte
	switch err := m.cfg.Sealer.Derive(ctx, identityInfo, got[:]); {
	case errors.Is(err, seal.ErrReseal):
		m.cfg.Log.Warn("sealed key void (firmware wrapping key changed?): sealing the unwrapped key again")
		if err := m.cfg.Sealer.Seal(ctx, u.DEK.Bytes()); err != nil {
			return local("sealer", "seal the data encryption key again", err)
		}
	case err != nil:
		return local("sealer", "sealer", err)
	default:
		want, _ := hex.DecodeString(m.identity.Fingerprint)
		same := subtle.ConstantTimeCompare(got[:], want) == 1
		secmem.Wipe(got[:])
		if !same {
			return local("sealer", "the sealed key is not the node's key", errors.New("sealer fingerprint mismatch"))
		}
	}
	rec, version := m.keep(rec, u, info.Version)
	m.held, m.version, m.lastProof = rec, version, m.cfg.Clock.Now()
	m.cfg.Machine.Update(func(s *lock.Status) { s.KeyVersion = version })
	return nil
}
