// SPDX-License-Identifier: Apache-2.0

package keymgr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/byokd/byokd/agent/keyprotect"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/internal/clock"
)

// fakeKP is Key Protect for one root key, scripted by the test: each
// ciphertext unwraps to its DEK, and errors can be set per call.
type fakeKP struct {
	mu        sync.Mutex
	version   string
	state     int
	deleted   bool
	metaErr   error
	unwrapErr error
	deks      map[string][]byte // ciphertext → DEK
	made      map[string]string // ciphertext → key version it was made under
	rewrapTo  map[string]string // ciphertext → its re-wrapped form, after a rotation
	calls     map[string]int
	n         int
	// beforeUnwrap, when set, runs once at the next unwrap, before it.
	beforeUnwrap func(f *fakeKP)
}

func newFakeKP() *fakeKP {
	return &fakeKP{version: "v1", state: keyprotect.StateActive, deks: map[string][]byte{}, made: map[string]string{},
		rewrapTo: map[string]string{}, calls: map[string]int{}}
}

func (f *fakeKP) Metadata(context.Context) (*keyprotect.KeyInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["metadata"]++
	if f.metaErr != nil {
		return nil, f.metaErr
	}
	return &keyprotect.KeyInfo{ID: "root", State: f.state, Deleted: f.deleted, Version: f.version}, nil
}

// wrap adds a ciphertext for dek under the current version.
func (f *fakeKP) wrap(dek []byte) string {
	f.n++
	ct := fmt.Sprintf("ct-%d", f.n)
	f.deks[ct] = bytes.Clone(dek)
	f.made[ct] = f.version
	return ct
}

func (f *fakeKP) Unwrap(_ context.Context, ct string, aad []string) (*keyprotect.Unwrapped, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["unwrap"]++
	if f.beforeUnwrap != nil {
		f.beforeUnwrap(f)
		f.beforeUnwrap = nil
	}
	if f.unwrapErr != nil {
		return nil, f.unwrapErr
	}
	dek, ok := f.deks[ct]
	if !ok || len(aad) != 2 {
		return nil, &keyprotect.APIError{Op: "unwrap", Status: 400, KeyProtect: true, Code: "INVALID_FIELD_ERR", Target: "ciphertext"}
	}
	buf, _ := secmem.New(32)
	copy(buf.Bytes(), dek)
	u := &keyprotect.Unwrapped{DEK: buf, KeyVersion: f.made[ct]}
	if f.made[ct] != f.version {
		re := f.wrap(dek)
		u.Rewrapped, u.RewrappedVersion = re, f.version
	}
	return u, nil
}

func (f *fakeKP) WrapNew(context.Context, []string) (*keyprotect.Wrapped, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["wrap"]++
	buf, _ := secmem.New(32)
	copy(buf.Bytes(), bytes.Repeat([]byte{byte(f.n + 1)}, 32))
	ct := f.wrap(buf.Bytes())
	return &keyprotect.Wrapped{DEK: buf, Ciphertext: ct, KeyVersion: f.version}, nil
}

func (f *fakeKP) set(fn func(f *fakeKP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeKP) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// rig is a manager over the fake Key Protect, a real wdek.Store in a
// temporary folder, a real memory sealer and a fake clock.
type rig struct {
	t     *testing.T
	kp    *fakeKP
	store *wdek.Store
	seal  *seal.Memory
	clock *clock.Fake
	m     *Manager
	mach  *lock.Machine
	logs  *bytes.Buffer
	cfg   Config
}

func newRig(t *testing.T, mutate ...func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, kp: newFakeKP(), clock: clock.NewFake(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)), logs: &bytes.Buffer{}}
	var err error
	if r.store, err = wdek.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.store.Close() })
	if r.seal, err = seal.NewMemory(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.seal.Close() })
	r.cfg = Config{
		KP: r.kp, Store: r.store, Sealer: r.seal, RootKeyID: "root", InstanceID: "inst", ClusterID: "c1",
		Provision: true, ProofInterval: 10 * time.Minute, OfflineGrace: time.Hour, ConfirmWindow: time.Minute,
		Clock: r.clock, Log: newLog(r.logs),
	}
	for _, fn := range mutate {
		fn(&r.cfg)
	}
	r.build()
	return r
}

// build makes a new manager on the same folder, as a restarted byokd.
func (r *rig) build() {
	wipe := r.seal.Wipe
	r.mach = lock.New(lock.Status{}, lock.Hooks{Wipe: func(ctx context.Context) error { return wipe(ctx) }})
	r.mach.SetClock(r.clock.Now)
	r.cfg.Machine = r.mach
	r.m = New(r.cfg)
}

// swapCiphertext puts another ciphertext into the wrapped key file, as
// another node's or a damaged dek.json would, and returns the record it
// replaced.
func (r *rig) swapCiphertext(ct string) *wdek.Record {
	r.t.Helper()
	mine, err := r.store.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	other := *mine
	other.Ciphertext = ct
	if err := r.store.Replace(&other); err != nil {
		r.t.Fatal(err)
	}
	return mine
}

func (r *rig) step() (Result, lock.Status) {
	r.t.Helper()
	res := r.m.Step(context.Background())
	return res, r.mach.Status()
}

// want runs a round and checks the state it leaves.
func (r *rig) want(state lock.State, cause string) Result {
	r.t.Helper()
	res, st := r.step()
	if st.State != state || st.Cause != cause {
		r.t.Fatalf("after a round: %v %q (%s), want %v %q\nlogs:\n%s", st.State, st.Cause, st.Reason, state, cause, r.logs)
	}
	return res
}

func TestProvisionRecordsTheKeyIdentityAndServesIt(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	id, err := r.store.LoadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	st := r.mach.Status()
	if id.Generation != 1 || st.Generation != 1 || st.Fingerprint != id.Short() || len(st.Fingerprint) != 16 {
		t.Fatalf("identity %+v, status %+v", id, st)
	}
	var got [32]byte
	if err := r.seal.Derive(context.Background(), identityInfo, got[:]); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", got) != id.Fingerprint {
		t.Fatal("the recorded fingerprint is not the sealed key's")
	}
	// A restarted byokd serves the same key without provisioning again.
	r.build()
	r.want(lock.Unlocked, "")
	if n := r.kp.count("wrap"); n != 1 {
		t.Fatalf("%d keys created, want 1", n)
	}
}

// TestAnotherKeyLocksUntilAnOperatorAccepts: a wrapped key file from
// another node (same root key, same cluster) unwraps to another DEK. The
// proof locks, polls do not unlock, a restart does not unlock; only
// AcceptKey with both fingerprints does, with the next generation.
func TestAnotherKeyLocksUntilAnOperatorAccepts(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	r.swapCiphertext(r.kp.wrap(bytes.Repeat([]byte{0x42}, 32)))
	r.clock.Advance(11 * time.Minute) // the next round is a proof
	r.want(lock.Locked, "key-changed")
	st := r.mach.Status()
	if st.Offered == "" || st.Offered == st.Fingerprint || !strings.Contains(st.Action, "byokctl accept-key "+st.Fingerprint+" "+st.Offered) {
		t.Fatalf("sticky lock status: %+v", st)
	}
	unwraps := r.kp.count("unwrap")
	for range 5 {
		r.clock.Advance(15 * time.Second)
		r.want(lock.Locked, "key-changed")
	}
	if n := r.kp.count("unwrap") - unwraps; n != 0 {
		t.Fatalf("%d unwraps while the file did not change", n)
	}
	// A restart unwraps once, finds the other key again, and stays locked.
	r.build()
	r.want(lock.Locked, "key-changed")
	st = r.mach.Status()

	if _, err := r.m.AcceptKey(context.Background(), Operator{}, st.Offered, st.Fingerprint); !errors.Is(err, ErrMismatch) {
		t.Fatalf("accept with the fingerprints swapped: %v", err)
	}
	// forget-key cannot take the other key in without naming it.
	if err := r.m.ForgetKey(context.Background(), Operator{}, st.Fingerprint); !errors.Is(err, ErrNotApplicable) {
		t.Fatalf("forget-key with another node's dek.json in place: %v", err)
	}
	id, err := r.m.AcceptKey(context.Background(), Operator{UID: 0, PID: 1}, st.Fingerprint, st.Offered)
	if err != nil {
		t.Fatal(err)
	}
	if id.Generation != 2 || id.Short() != st.Offered {
		t.Fatalf("accepted identity %+v", id)
	}
	r.want(lock.Unlocked, "")
	if st := r.mach.Status(); st.Generation != 2 || st.Fingerprint != id.Short() {
		t.Fatalf("status after accept: %+v", st)
	}
	if !strings.Contains(r.logs.String(), `"action":"accept-key"`) {
		t.Fatal("no audit line for accept-key")
	}
}

// TestRestoringTheOwnKeyFileUnlocks: after a key-changed lock, putting the
// node's own wrapped key back unlocks at the next round, with no operator
// action.
func TestRestoringTheOwnKeyFileUnlocks(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	mine := r.swapCiphertext(r.kp.wrap(bytes.Repeat([]byte{0x43}, 32)))
	r.clock.Advance(11 * time.Minute)
	r.want(lock.Locked, "key-changed")
	if err := r.store.Replace(mine); err != nil {
		t.Fatal(err)
	}
	r.want(lock.Unlocked, "")
	if st := r.mach.Status(); st.Generation != 1 {
		t.Fatalf("generation %d after restoring the own key, want 1", st.Generation)
	}
}

func TestMissingKeyFileIsWrittenBackWhileRunning(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	before, _ := os.ReadFile(r.store.Path())
	if err := os.Remove(r.store.Path()); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(11 * time.Minute)
	r.want(lock.Unlocked, "")
	after, err := os.ReadFile(r.store.Path())
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the wrapped key file was not written back as it was: %v", err)
	}
	if r.kp.count("wrap") != 1 || !strings.Contains(r.logs.String(), `"action":"restore-wrapped-key"`) {
		t.Fatalf("provisioned again (%d) or no audit line", r.kp.count("wrap"))
	}
}

// TestMissingKeyFileAtStartNeverProvisionsOverAServedKey: with an identity
// recorded, a missing wrapped key file at start is a lock that names the
// backup, even with provision = true; ForgetKey lets a new key in, under
// the next generation.
func TestMissingKeyFileAtStartNeverProvisionsOverAServedKey(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	old := r.mach.Status().Fingerprint
	if err := os.Remove(r.store.Path()); err != nil {
		t.Fatal(err)
	}
	r.build()
	r.want(lock.Locked, "wrapped-key-missing")
	st := r.mach.Status()
	if !strings.Contains(st.Reason, r.store.Path()) || !strings.Contains(st.Action, "restore "+r.store.Path()) || !strings.Contains(st.Action, "byokctl forget-key "+old) {
		t.Fatalf("status: %+v", st)
	}
	r.want(lock.Locked, "wrapped-key-missing")
	if r.kp.count("wrap") != 1 {
		t.Fatal("provisioned over the served key")
	}
	if err := r.m.ForgetKey(context.Background(), Operator{}, "0000000000000000"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("forget another key: %v", err)
	}
	if err := r.m.ForgetKey(context.Background(), Operator{}, old); err != nil {
		t.Fatal(err)
	}
	r.want(lock.Unlocked, "")
	if st := r.mach.Status(); st.Generation != 2 || st.Fingerprint == old {
		t.Fatalf("after forget: %+v", st)
	}
	if err := r.m.ForgetKey(context.Background(), Operator{}, r.mach.Status().Fingerprint); !errors.Is(err, ErrNotApplicable) {
		t.Fatalf("forget while serving: %v", err)
	}
}

// TestAADComesFromTheConfig: a file whose labels claim this cluster but
// whose aad is another's is never unwrapped. A serving node goes on with
// the wrapped key it holds and warns; at start it locks.
func TestAADComesFromTheConfig(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	rec, _ := r.store.Load()
	rec.AAD = AAD("other")
	if err := r.store.Replace(rec); err != nil {
		t.Fatal(err)
	}
	unwraps := r.kp.count("unwrap")
	r.clock.Advance(15 * time.Second)
	r.want(lock.Unlocked, "")
	if st := r.mach.Status(); len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "bound to another cluster") {
		t.Fatalf("warnings %q", st.Warnings)
	}
	r.build()
	r.want(lock.Locked, "wrapped-key-foreign")
	if n := r.kp.count("unwrap") - unwraps; n != 1 {
		t.Fatalf("%d unwraps, want the serving node's one proof of the key it holds", n)
	}
}

// TestChangedKeyFileIsProvedAtTheNextCheck: a dek.json swapped for another
// node's is found at the next poll, not only at the next proof, and a
// file that stays as it is costs no more unwraps.
func TestChangedKeyFileIsProvedAtTheNextCheck(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	for range 3 {
		r.clock.Advance(15 * time.Second)
		r.want(lock.Unlocked, "")
	}
	if n := r.kp.count("unwrap"); n != 0 {
		t.Fatalf("%d unwraps while the file stayed as it was, want none before the proof interval", n)
	}
	r.swapCiphertext(r.kp.wrap(bytes.Repeat([]byte{0x44}, 32)))
	r.clock.Advance(15 * time.Second)
	r.want(lock.Locked, "key-changed")
}

// TestRetryAfterReachesTheScheduler: a 429's Retry-After is in the round's
// Result.
func TestRetryAfterReachesTheScheduler(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	r.kp.set(func(f *fakeKP) {
		f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 429, RetryAfter: 7 * time.Second}
	})
	r.clock.Advance(15 * time.Second)
	if res := r.want(lock.Degraded, "rate-limited"); res.Outcome != Retry || res.RetryAfter != 7*time.Second {
		t.Fatalf("result %+v, want a retry after 7s", res)
	}
}

// TestARefusalRunBrokenByAnotherAnswerStartsOver: a 401, then only 503s
// for minutes, then a 401 again: the refusal did not persist unbroken, so
// the window starts over and the node does not lock on it.
func TestARefusalRunBrokenByAnotherAnswerStartsOver(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	refuse := &keyprotect.APIError{Op: "metadata", Status: 401, KeyProtect: true}
	down := &keyprotect.APIError{Op: "metadata", Status: 503}
	r.kp.set(func(f *fakeKP) { f.metaErr = refuse })
	r.want(lock.Degraded, "access-refused")
	r.kp.set(func(f *fakeKP) { f.metaErr = down })
	for range 5 {
		r.clock.Advance(30 * time.Second)
		r.want(lock.Degraded, "unavailable")
	}
	r.kp.set(func(f *fakeKP) { f.metaErr = refuse })
	res := r.want(lock.Degraded, "access-refused")
	if left := res.Deadline.Sub(r.clock.Now()); left != time.Minute {
		t.Fatalf("a new run of refusals has %v left, want the whole 1m window", left)
	}
}

func TestRefusedWrappedKeyLocksUntilTheFileChanges(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	mine := r.swapCiphertext("damaged")
	r.clock.Advance(11 * time.Minute)
	r.want(lock.Locked, "wrapped-key-refused")
	n := r.kp.count("unwrap")
	r.clock.Advance(15 * time.Second)
	r.want(lock.Locked, "wrapped-key-refused")
	if r.kp.count("unwrap") != n {
		t.Fatal("unwrapped a refused key again")
	}
	if err := r.store.Replace(mine); err != nil {
		t.Fatal(err)
	}
	r.want(lock.Unlocked, "")
}

// TestAnswerTable runs each kind of answer through a serving node on the
// fake clock: what locks at once, what degrades, and when.
func TestAnswerTable(t *testing.T) {
	unauthorized := &keyprotect.APIError{Op: "metadata", Status: http.StatusUnauthorized, KeyProtect: true}
	hsm := &keyprotect.APIError{Op: "unwrap", Status: http.StatusUnprocessableEntity, KeyProtect: true, Code: "UNPROCESSABLE_CIPHERTEXT_ERR"}
	for _, tc := range []struct {
		name  string
		set   func(f *fakeKP)
		every time.Duration // between rounds
		// the state after each round
		states []lock.State
		cause  string // of the last state
	}{
		{"disabled locks at once", func(f *fakeKP) { f.state = keyprotect.StateSuspended }, time.Second,
			[]lock.State{lock.Locked}, "key-disabled"},
		{"deleted: true locks even when the state reads deactivated", func(f *fakeKP) { f.state, f.deleted = keyprotect.StateDeactivated, true }, time.Second,
			[]lock.State{lock.Locked}, "key-deleted"},
		{"409 locks at once", func(f *fakeKP) {
			f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 409, KeyProtect: true, Code: "KEY_ACTION_INVALID_STATE_ERR"}
		}, time.Second, []lock.State{lock.Locked}, "key-disabled"},
		{"401 is confirmed over the window, then locks", func(f *fakeKP) { f.metaErr = unauthorized }, 20 * time.Second,
			[]lock.State{lock.Degraded, lock.Degraded, lock.Degraded, lock.Locked}, "access-refused"},
		{"422 is confirmed over the window, then locks", func(f *fakeKP) { f.unwrapErr = hsm }, 30 * time.Second,
			[]lock.State{lock.Degraded, lock.Degraded, lock.Locked}, "kp-internal-error"},
		{"a 403 from a load balancer is transient", func(f *fakeKP) {
			f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 403, ContentType: "text/html"}
		}, 20 * time.Minute, []lock.State{lock.Degraded, lock.Degraded, lock.Degraded, lock.Locked}, "offline-grace-expired"},
		{"503 waits for the offline grace", func(f *fakeKP) { f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 503} }, 30 * time.Minute,
			[]lock.State{lock.Degraded, lock.Degraded, lock.Locked}, "offline-grace-expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.want(lock.Unlocked, "")
			if tc.name[:3] == "422" {
				r.clock.Advance(11 * time.Minute) // rounds are proofs from here
				r.m.lastProof = time.Time{}
			}
			r.kp.set(tc.set)
			for i, want := range tc.states {
				if i > 0 {
					r.clock.Advance(tc.every)
				}
				if tc.name[:3] == "422" {
					r.m.lastProof = time.Time{}
				}
				_, st := r.step()
				if st.State != want {
					t.Fatalf("round %d at +%v: %v (%s), want %v", i, time.Duration(i)*tc.every, st.State, st.Reason, want)
				}
				if i == len(tc.states)-1 && st.Cause != tc.cause {
					t.Fatalf("cause %q (%s), want %q", st.Cause, st.Reason, tc.cause)
				}
			}
		})
	}
}

// TestAccessRefusalShorterThanTheWindowNeverLocks: a network-policy burst
// of refusals that ends before the window keeps the node serving, and the
// next burst gets a whole window again.
func TestAccessRefusalShorterThanTheWindowNeverLocks(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	refuse := &keyprotect.APIError{Op: "metadata", Status: 401, KeyProtect: true}
	for burst := range 3 {
		r.kp.set(func(f *fakeKP) { f.metaErr = refuse })
		var res Result
		for i := 0; i < 5; i++ {
			res = r.want(lock.Degraded, "access-refused")
			if res.Outcome != Retry || res.Deadline.IsZero() {
				t.Fatalf("burst %d: %+v, want a retry with a deadline", burst, res)
			}
			r.clock.Advance(10 * time.Second)
		}
		if !strings.Contains(r.mach.Status().Reason, "possible causes") {
			t.Fatalf("the reason does not name the causes: %s", r.mach.Status().Reason)
		}
		r.kp.set(func(f *fakeKP) { f.metaErr = nil })
		r.want(lock.Unlocked, "")
		r.clock.Advance(15 * time.Second)
	}
}

func TestZeroWindowLocksAtTheFirstRefusal(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ConfirmWindow = 0 })
	r.want(lock.Unlocked, "")
	r.kp.set(func(f *fakeKP) { f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 401, KeyProtect: true} })
	r.want(lock.Locked, "access-refused")
}

func TestConfirmWindowNeverOutlastsTheOfflineGrace(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ConfirmWindow, c.OfflineGrace = 10*time.Minute, 30*time.Second })
	r.want(lock.Unlocked, "")
	r.kp.set(func(f *fakeKP) { f.metaErr = &keyprotect.APIError{Op: "metadata", Status: 403, KeyProtect: true} })
	res := r.want(lock.Degraded, "access-refused")
	if left := res.Deadline.Sub(r.clock.Now()); left != 30*time.Second {
		t.Fatalf("deadline in %v, want the 30s grace", left)
	}
	r.clock.Advance(30 * time.Second)
	r.want(lock.Locked, "access-refused")
}

// TestProofRunsEveryProofInterval counts unwraps on the fake clock.
func TestProofRunsEveryProofInterval(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	base := r.kp.count("unwrap")
	for range 40 * 4 { // 40 minutes of 15 s rounds
		r.clock.Advance(15 * time.Second)
		r.want(lock.Unlocked, "")
	}
	if n := r.kp.count("unwrap") - base; n != 4 {
		t.Fatalf("%d proof unwraps in 40 minutes, want 4 (every 10 minutes)", n)
	}
}

// TestRotationBetweenMetadataAndUnwrapIsNotProvedForever: metadata reads
// the old version, the unwrap answer is re-wrapped under the new one; the
// stored version comes from the answer, so later checks do not unwrap.
func TestRotationBetweenMetadataAndUnwrapIsNotProvedForever(t *testing.T) {
	r := newRig(t)
	r.want(lock.Unlocked, "")
	r.kp.set(func(f *fakeKP) { f.version = "v2" })
	// The check sees v2 and proves; a second rotation lands between the
	// proof's metadata read and its unwrap.
	r.kp.set(func(f *fakeKP) { f.beforeUnwrap = func(f *fakeKP) { f.version = "v3" } })
	r.clock.Advance(15 * time.Second)
	r.want(lock.Unlocked, "")
	if st := r.mach.Status(); st.KeyVersion != "v3" {
		t.Fatalf("stored version %q, want v3 from the unwrap answer", st.KeyVersion)
	}
	rec, _ := r.store.Load()
	if rec.KeyVersion != "v3" {
		t.Fatalf("dek.json says %q, want v3", rec.KeyVersion)
	}
	n := r.kp.count("unwrap")
	for range 10 {
		r.clock.Advance(15 * time.Second)
		r.want(lock.Unlocked, "")
	}
	if d := r.kp.count("unwrap") - n; d != 0 {
		t.Fatalf("%d more unwraps after the race, want none before the next proof", d)
	}
}

// TestFailedWipeLeavesTheNodeLockedAndIsRetried: a sealer whose wipe fails
// leaves the node LOCKED with the error in its status, and the next round
// wipes.
func TestFailedWipeLeavesTheNodeLockedAndIsRetried(t *testing.T) {
	r := newRig(t)
	fails := 1
	r.mach = lock.New(lock.Status{}, lock.Hooks{Wipe: func(ctx context.Context) error {
		if fails > 0 {
			fails--
			return errors.New("tpm does not answer")
		}
		return r.seal.Wipe(ctx)
	}})
	r.cfg.Machine = r.mach
	r.m = New(r.cfg)
	r.want(lock.Unlocked, "")
	r.kp.set(func(f *fakeKP) { f.state = keyprotect.StateSuspended })
	r.want(lock.Locked, "key-disabled")
	if st := r.mach.Status(); !strings.Contains(st.WipeError, "tpm does not answer") {
		t.Fatalf("status after a failed wipe: %+v", st)
	}
	if !strings.Contains(r.logs.String(), "could not be wiped") {
		t.Fatal("the failed wipe is not logged")
	}
	r.clock.Advance(15 * time.Second)
	r.want(lock.Locked, "key-disabled")
	if st := r.mach.Status(); st.WipeError != "" {
		t.Fatalf("the retried wipe did not clear the error: %+v", st)
	}
	var out [32]byte
	if err := r.seal.Derive(context.Background(), []byte("x"), out[:]); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("derive after the retried wipe: %v", err)
	}
}

func newLog(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }
