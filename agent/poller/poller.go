// Package poller watches the root key in Key Protect and drives the lock
// state: it unlocks by unwrapping the stored key, checks the root key every
// poll interval, proves it with an unwrap less often, persists re-wrapped
// keys after a rotation, and reports failures to the lock machine.
package poller

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/byokd/byokd/agent/keyprotect"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
)

// KeyProtect is what the poller asks of Key Protect (*keyprotect.Client).
type KeyProtect interface {
	Metadata(ctx context.Context) (*keyprotect.KeyInfo, error)
	Unwrap(ctx context.Context, ciphertext string, aad []string) (dek []byte, rewrapped string, err error)
	WrapNew(ctx context.Context, aad []string) (dek []byte, ciphertext, version string, err error)
}

// Store keeps the wrapped key (*wdek.Store).
type Store interface {
	Load() (*wdek.Record, error)
	Create(*wdek.Record) error
	Replace(*wdek.Record) error
	Path() string
}

// Sealer holds the DEK (crypto/seal).
type Sealer interface {
	Seal(ctx context.Context, dek []byte) error
	Derive(ctx context.Context, info []byte, out []byte) error
}

// Config sets up a poller.
type Config struct {
	KP            KeyProtect
	Store         Store
	Sealer        Sealer
	Machine       *lock.Machine
	RootKeyID     string
	InstanceID    string
	ClusterID     string
	Provision     bool
	Interval      time.Duration
	Jitter        float64
	ProofInterval time.Duration
	OfflineGrace  time.Duration
	LockOnExpired bool
	Log           *slog.Logger
	Metrics       *metrics.Metrics
	// Beat, when set, is called at least every second while the loop is
	// alive (the systemd watchdog listens to it).
	Beat func()
}

// Poller runs the checks.
type Poller struct {
	cfg       Config
	lastOK    time.Time // last time Key Protect answered a check well
	lastProof time.Time
	backoff   time.Duration
	version   string // root key version the stored ciphertext was made under
	reseal    atomic.Bool
	kick      chan struct{}
	spread    bool // the first round's wait has been spread over an interval
}

// New returns a poller; Run starts it.
func New(cfg Config) *Poller {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Poller{cfg: cfg, kick: make(chan struct{}, 1)}
}

// Reseal asks for the DEK to be unwrapped and sealed again at once: the
// sealer said its sealed key is void (a CPACF protected key after the
// firmware wrapping key changed).
func (p *Poller) Reseal() {
	p.reseal.Store(true)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// AAD binds a wrapped key to its cluster.
func AAD(clusterID string) []string { return []string{"byokd", "cluster:" + clusterID} }

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) {
	beat := p.cfg.Beat
	if beat == nil {
		beat = func() {}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		beat()
		wait := p.Step(ctx)
		beat()
		t := time.NewTimer(wait)
	waiting:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-tick.C:
				beat()
			case <-p.kick:
				t.Stop()
				break waiting
			case <-t.C:
				break waiting
			}
		}
	}
}

// Step runs one round — unlock when not serving, else check or prove — and
// returns how long to wait before the next.
func (p *Poller) Step(ctx context.Context) time.Duration {
	st := p.cfg.Machine.Status()
	var err error
	var op string
	switch {
	case !st.State.Serving():
		op = "unlock"
		p.reseal.Store(false)
		err = p.unlock(ctx)
	case p.reseal.Swap(false):
		op = "reseal"
		err = p.unlock(ctx)
	case time.Since(p.lastProof) >= p.cfg.ProofInterval:
		op = "proof"
		err = p.proof(ctx)
	default:
		op = "check"
		err = p.check(ctx)
	}
	return p.report(ctx, op, err)
}

// report turns a round's outcome into a lock event and the next wait.
func (p *Poller) report(ctx context.Context, op string, err error) time.Duration {
	now := time.Now()
	var lerr *localError
	switch v := keyprotect.Classify(err); {
	case err == nil:
		p.backoff = 0
		p.lastOK = now
		if p.cfg.Metrics != nil {
			p.cfg.Metrics.Checked(now)
		}
		if op == "unlock" {
			p.cfg.Machine.Fire(ctx, lock.EvUnlocked, "")
		} else {
			p.cfg.Machine.Fire(ctx, lock.EvCheckOK, "")
		}
		return p.next()
	case errors.As(err, &lerr):
		// The stored key or the sealer, not Key Protect: lock and say so.
		p.cfg.Log.Error("cannot unlock", "op", op, "err", err)
		p.cfg.Machine.Fire(ctx, lock.EvAuthoritative, lerr.reason)
		return p.next()
	case v.Class == keyprotect.Authoritative:
		p.backoff = 0
		p.cfg.Log.Warn("root key refused", "op", op, "reason", v.Reason, "err", err)
		p.cfg.Machine.Fire(ctx, lock.EvAuthoritative, v.Reason)
		return p.next()
	default:
		p.cfg.Log.Warn("key protect unreachable", "op", op, "reason", v.Reason, "err", err)
		st := p.cfg.Machine.Status().State
		grace := p.cfg.OfflineGrace
		if st.Serving() && now.Sub(p.lastOK) >= grace {
			p.cfg.Machine.Fire(ctx, lock.EvGraceExpired,
				fmt.Sprintf("Key Protect unreachable for longer than offline_grace (%s): %s", grace, v.Reason))
			return p.jittered()
		}
		p.cfg.Machine.Fire(ctx, lock.EvTransient, v.Reason)
		wait := p.nextBackoff(v.RetryAfter)
		if st.Serving() {
			// Wake up in time to lock when the grace runs out.
			if left := p.lastOK.Add(grace).Sub(now); left > 0 && left < wait {
				wait = left
			}
		}
		return wait
	}
}

// nextBackoff doubles from 1 s up to the poll interval, with jitter, and
// never below the server's Retry-After. A wait set by Retry-After gets the
// jitter on top: nodes a rate limit refused together would otherwise all come
// back in the same second and be refused together again.
func (p *Poller) nextBackoff(retryAfter time.Duration) time.Duration {
	switch {
	case p.backoff == 0:
		p.backoff = time.Second
	default:
		p.backoff *= 2
	}
	if p.backoff > p.cfg.Interval {
		p.backoff = p.cfg.Interval
	}
	wait := p.backoff/2 + rand.N(p.backoff/2+1)
	if retryAfter > wait {
		wait = retryAfter + rand.N(p.backoff/2+1)
	}
	return wait
}

// next is the wait before the next round after an answer from Key Protect
// or a local failure: the interval with jitter, except after the process's
// first such round, which waits anywhere in one interval. Nodes started
// together (a fleet after a power cut) would otherwise go on polling in step,
// the whole fleet within a few seconds of every interval; later rounds keep
// the spread, so a fleet that unlocks again after a disable is not spread a
// second time, which would add checks to the busiest interval.
func (p *Poller) next() time.Duration {
	if !p.spread {
		p.spread = true
		return time.Duration(rand.Int64N(int64(p.cfg.Interval))) + 1
	}
	return p.jittered()
}

func (p *Poller) jittered() time.Duration {
	d := p.cfg.Interval
	if j := p.cfg.Jitter; j > 0 {
		span := time.Duration(float64(d) * j)
		d += rand.N(2*span+1) - span
	}
	return d
}

// localError is a failure on this node (wrapped key file, sealer) rather
// than in Key Protect.
type localError struct {
	reason string
	err    error
}

func (e *localError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func local(reason string, err error) error { return &localError{reason: reason, err: err} }

func (p *Poller) timed(op string, fn func() error) error {
	start := time.Now()
	err := fn()
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.KeyProtect(op, keyprotect.Classify(err).Class.String(), time.Since(start))
	}
	return err
}

// load reads the stored wrapped key, or provisions one when allowed.
func (p *Poller) load(ctx context.Context) (*wdek.Record, []byte, error) {
	rec, err := p.cfg.Store.Load()
	if errors.Is(err, wdek.ErrNotExist) {
		if !p.cfg.Provision {
			return nil, nil, local("no wrapped key at "+p.cfg.Store.Path()+" and provision = false", err)
		}
		return p.provision(ctx)
	}
	if err != nil {
		return nil, nil, local("wrapped key file unusable", err)
	}
	if rec.RootKeyID != p.cfg.RootKeyID || rec.InstanceID != p.cfg.InstanceID || rec.ClusterID != p.cfg.ClusterID {
		return nil, nil, local("wrapped key file belongs to another root key, instance or cluster",
			fmt.Errorf("%s holds root key %s, instance %s, cluster %s; config says %s, %s, %s",
				p.cfg.Store.Path(), rec.RootKeyID, rec.InstanceID, rec.ClusterID, p.cfg.RootKeyID, p.cfg.InstanceID, p.cfg.ClusterID))
	}
	return rec, nil, nil
}

// provision has Key Protect create a DEK and stores it wrapped, before the
// DEK is used for anything: a crash in between loses nothing.
func (p *Poller) provision(ctx context.Context) (*wdek.Record, []byte, error) {
	aad := AAD(p.cfg.ClusterID)
	var dek []byte
	var ct, version string
	err := p.timed("wrap", func() error {
		var err error
		dek, ct, version, err = p.cfg.KP.WrapNew(ctx, aad)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	now := time.Now().UTC()
	rec := &wdek.Record{
		Schema: wdek.Schema, RootKeyID: p.cfg.RootKeyID, InstanceID: p.cfg.InstanceID, ClusterID: p.cfg.ClusterID,
		Ciphertext: ct, KeyVersion: version, AAD: aad, Created: now, Updated: now,
	}
	if err := p.cfg.Store.Create(rec); err != nil {
		secmem.Wipe(dek)
		return nil, nil, local("store the new wrapped key", err)
	}
	p.cfg.Log.Info("provisioned a new data encryption key", "event", "audit", "action", "provision",
		"root_key_id", p.cfg.RootKeyID, "key_version", version, "fingerprint", rec.Fingerprint(), "path", p.cfg.Store.Path())
	return rec, dek, nil
}

// checkMetadata reads the root key's state; it returns the key version.
func (p *Poller) checkMetadata(ctx context.Context) (*keyprotect.KeyInfo, error) {
	var info *keyprotect.KeyInfo
	err := p.timed("metadata", func() error {
		var err error
		info, err = p.cfg.KP.Metadata(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := keyprotect.CheckUsable(info); err != nil {
		return nil, err
	}
	expired := info.State == keyprotect.StateDeactivated
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.RootKeyExpired(expired)
	}
	p.cfg.Machine.Update(func(s *lock.Status) {
		s.Warnings = removeWarning(s.Warnings, warnExpired)
		if expired {
			s.Warnings = append(s.Warnings, warnExpired)
		}
	})
	if expired {
		if p.cfg.LockOnExpired {
			return nil, &keyprotect.StateError{KeyID: info.ID, State: info.State}
		}
		p.cfg.Log.Warn("root key expired: it still unwraps, but rotation and re-provisioning are impossible; rotate to a new root key",
			"root_key_id", p.cfg.RootKeyID)
	}
	return info, nil
}

const warnExpired = "root key expired (deactivated): it still unwraps, but rotation and re-provisioning are impossible"

func removeWarning(ws []string, w string) []string {
	out := ws[:0]
	for _, x := range ws {
		if x != w {
			out = append(out, x)
		}
	}
	return out
}

// unlock loads (or provisions) the wrapped key, checks the root key, unwraps
// and seals the DEK.
func (p *Poller) unlock(ctx context.Context) error {
	rec, dek, err := p.load(ctx)
	if err != nil {
		return err
	}
	info, err := p.checkMetadata(ctx)
	if err != nil {
		secmem.Wipe(dek)
		return err
	}
	if dek == nil {
		var rewrapped string
		if dek, rewrapped, err = p.unwrap(ctx, rec); err != nil {
			return err
		}
		if rewrapped != "" {
			rec = p.persistRewrap(rec, rewrapped, info.Version)
		}
	}
	if err := p.cfg.Sealer.Seal(ctx, dek); err != nil {
		secmem.Wipe(dek)
		return local("seal the data encryption key", err)
	}
	p.version = rec.KeyVersion
	p.lastProof = time.Now()
	p.cfg.Machine.Update(func(s *lock.Status) { s.KeyVersion = rec.KeyVersion })
	p.cfg.Log.Info("unlocked", "event", "audit", "action", "unlock", "root_key_id", p.cfg.RootKeyID,
		"key_version", rec.KeyVersion, "fingerprint", rec.Fingerprint())
	return nil
}

// check reads the root key's metadata; a new key version means the root key
// was rotated, and a proof unwrap then fetches the re-wrapped key.
func (p *Poller) check(ctx context.Context) error {
	info, err := p.checkMetadata(ctx)
	if err != nil {
		return err
	}
	if info.Version != "" && info.Version != p.version {
		p.cfg.Log.Info("root key rotated; re-wrapping the stored key", "root_key_id", p.cfg.RootKeyID,
			"key_version", info.Version)
		return p.proof(ctx)
	}
	return nil
}

// unwrap has Key Protect unwrap the stored key, timed for the metrics.
func (p *Poller) unwrap(ctx context.Context, rec *wdek.Record) (dek []byte, rewrapped string, err error) {
	err = p.timed("unwrap", func() error {
		var err error
		dek, rewrapped, err = p.cfg.KP.Unwrap(ctx, rec.Ciphertext, rec.AAD)
		return err
	})
	return dek, rewrapped, err
}

// proofInfo is the derivation input of the proof: a value both the sealer
// and a freshly unwrapped DEK can compute, compared in constant time.
var proofInfo = []byte("byokd/v1/proof")

// proof unwraps the stored key again and checks it is the sealed one.
func (p *Poller) proof(ctx context.Context) error {
	rec, err := p.cfg.Store.Load()
	if err != nil {
		return local("wrapped key file unusable", err)
	}
	info, err := p.checkMetadata(ctx)
	if err != nil {
		return err
	}
	dek, rewrapped, err := p.unwrap(ctx, rec)
	if err != nil {
		return err
	}
	want, derr := datakey.Derive(dek, proofInfo)
	secmem.Wipe(dek)
	if derr != nil {
		return local("derive proof", derr)
	}
	var got [32]byte
	if err := p.cfg.Sealer.Derive(ctx, proofInfo, got[:]); err != nil {
		secmem.Wipe(want[:])
		if errors.Is(err, seal.ErrReseal) {
			p.cfg.Log.Warn("sealed key void (firmware wrapping key changed?): unwrapping and sealing again")
			return p.unlock(ctx)
		}
		return local("sealer", err)
	}
	same := subtle.ConstantTimeCompare(want[:], got[:]) == 1
	secmem.Wipe(want[:])
	secmem.Wipe(got[:])
	if !same {
		return local("stored wrapped key no longer matches the sealed key", errors.New("proof mismatch"))
	}
	if rewrapped != "" {
		rec = p.persistRewrap(rec, rewrapped, info.Version)
	}
	p.version = rec.KeyVersion
	p.lastProof = time.Now()
	p.cfg.Machine.Update(func(s *lock.Status) { s.KeyVersion = rec.KeyVersion })
	return nil
}

// persistRewrap stores the DEK re-wrapped under the newest root key
// version. A failure is logged and retried at the next proof: the old
// ciphertext still unwraps.
func (p *Poller) persistRewrap(rec *wdek.Record, rewrapped, version string) *wdek.Record {
	next := *rec
	next.Ciphertext = rewrapped
	next.KeyVersion = version
	next.Updated = time.Now().UTC()
	if err := p.cfg.Store.Replace(&next); err != nil {
		p.cfg.Log.Error("persist re-wrapped key; keeping the old one", "err", err, "path", p.cfg.Store.Path())
		return rec
	}
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.Rewrapped()
	}
	p.cfg.Log.Info("persisted the key re-wrapped under the rotated root key", "event", "audit", "action", "rotation",
		"root_key_id", p.cfg.RootKeyID, "key_version", version, "previous_version", rec.KeyVersion,
		"fingerprint", next.Fingerprint())
	return &next
}
