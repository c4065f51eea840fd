// SPDX-License-Identifier: Apache-2.0

// Package lock is byokd's lock state machine: one table of state × event →
// state + actions, and the subscribers that react to every change.
//
// Lock words in byokd: lock, unlock and Locked name the node's state (and
// Manager.unlock, which unwraps the key) and nothing else. A function that
// must run with a guard held says which in its comment ("m.mu must be
// held"), and when its name says so too, it ends in the guard's name and
// Held (setMuHeld, tpm's sealSemHeld), never in Locked. A semaphore or a
// writers' lock is taken by acquire and given back by release. Memory kept
// in RAM by mlock is mlocked.
package lock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// State is the node's lock state.
type State int

// The states, in the order a node goes through them.
const (
	Starting State = iota + 1
	Unlocked
	Degraded
	Locked
)

func (s State) String() string {
	switch s {
	case Starting:
		return "STARTING"
	case Unlocked:
		return "UNLOCKED"
	case Degraded:
		return "DEGRADED"
	case Locked:
		return "LOCKED"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Serving reports whether key calls are answered in this state.
func (s State) Serving() bool { return s == Unlocked || s == Degraded }

// Event is what happened, as the key manager saw it.
type Event int

// The events.
const (
	// EvUnlocked: the wrapped key was unwrapped and sealed.
	EvUnlocked Event = iota + 1
	// EvCheckOK: Key Protect answered a check and the root key is usable.
	EvCheckOK
	// EvTransient: Key Protect could not be reached (network, 5xx, 429,
	// answers that are not Key Protect's), or refused in a way that is
	// still being confirmed (401, 403, 422).
	EvTransient
	// EvAuthoritative: the node must lock now: Key Protect said the root
	// key may not be used, a refusal was confirmed, the stored key is
	// another key or refused, or a local failure keeps the key from being
	// served.
	EvAuthoritative
	// EvGraceExpired: Key Protect has been unreachable for longer than
	// the offline grace.
	EvGraceExpired
)

func (e Event) String() string {
	return [...]string{"", "unlocked", "check-ok", "transient", "authoritative", "grace-expired"}[e]
}

// transition is one cell of the table.
type transition struct {
	to   State
	wipe bool // wipe every key before anyone hears of the new state
}

// table is the whole state machine. A missing cell keeps the state.
var table = map[State]map[Event]transition{
	Starting: {
		EvUnlocked:      {to: Unlocked},
		EvAuthoritative: {to: Locked, wipe: true},
	},
	Unlocked: {
		EvTransient:     {to: Degraded},
		EvAuthoritative: {to: Locked, wipe: true},
		EvGraceExpired:  {to: Locked, wipe: true},
	},
	Degraded: {
		EvUnlocked:      {to: Unlocked},
		EvCheckOK:       {to: Unlocked},
		EvAuthoritative: {to: Locked, wipe: true},
		EvGraceExpired:  {to: Locked, wipe: true},
	},
	Locked: {
		EvUnlocked: {to: Unlocked},
	},
}

// Status is the node's state with what an operator needs to read it.
type Status struct {
	State  State
	Reason string
	// Cause is a fixed token for the reason (key-disabled, access-refused,
	// key-changed, ...), for metrics and scripts.
	Cause     string
	Since     time.Time // when State was entered
	LastCheck time.Time // last time Key Protect answered
	RootKeyID string
	// KeyVersion is the root key version the stored wrapped key was made
	// under.
	KeyVersion string
	Sealer     string
	// Fingerprint names the data encryption key the node serves (16 hex
	// digits of its keyed fingerprint); Generation counts the keys it has
	// served. Both change only with the key.
	Fingerprint string
	Generation  uint32
	// Action says what an operator must do to clear a lock byokd does not
	// clear by itself; empty otherwise.
	Action string
	// Offered is the fingerprint of a different key byokd refused to serve.
	Offered string
	// WipeError says why keys could not be wiped when the node locked;
	// empty when they were (or nothing was to wipe).
	WipeError string
	Warnings  []string
}

func (s Status) equal(o Status) bool {
	return s.State == o.State && s.Reason == o.Reason && s.Cause == o.Cause && s.LastCheck.Equal(o.LastCheck) &&
		s.RootKeyID == o.RootKeyID && s.KeyVersion == o.KeyVersion && s.Sealer == o.Sealer &&
		s.Fingerprint == o.Fingerprint && s.Generation == o.Generation && s.Action == o.Action &&
		s.Offered == o.Offered && s.WipeError == o.WipeError && slices.Equal(s.Warnings, o.Warnings)
}

// Why is what comes with an event: the reason an operator reads, a fixed
// cause, and for a lock byokd does not clear by itself the operator's
// action and the refused key.
type Why struct {
	Reason  string
	Cause   string
	Action  string
	Offered string
}

// Hooks are the machine's actions.
type Hooks struct {
	// Wipe destroys every key; it runs before a Locked state is published.
	Wipe func(ctx context.Context) error
	// Transition runs after every state change (audit log, metrics, lock
	// actions), in order, without m.mu held.
	Transition func(from, to Status, ev Event)
}

// Machine holds the state and its subscribers. It is safe for concurrent use.
//
// Lock order: fire, then mu. fire serialises Fire, Update and Wipe, so
// hooks see changes in order; mu guards st and subs and is never held
// while a hook runs, so Status answers while a wipe is stuck.
type Machine struct {
	hooks Hooks
	now   func() time.Time

	fire sync.Mutex
	mu   sync.Mutex
	st   Status
	subs map[*Sub]struct{}
}

// New returns a machine in Starting.
func New(initial Status, hooks Hooks) *Machine {
	m := &Machine{hooks: hooks, now: time.Now, subs: map[*Sub]struct{}{}}
	initial.State = Starting
	initial.Since = m.now()
	if initial.Reason == "" {
		initial.Reason = "starting"
	}
	m.st = initial
	return m
}

// SetClock makes the machine stamp Since and LastCheck with now (tests).
func (m *Machine) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Status returns the current status. It never waits for a hook.
func (m *Machine) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.st
	s.Warnings = slices.Clone(s.Warnings)
	return s
}

// Fire applies an event and returns the new status. Every subscriber hears
// of a change. A lock refuses key calls and tells subscribers at once (the
// plugin wipes its own keys on hearing it), then wipes the sealed keys; a
// failed wipe is returned, recorded in the status' WipeError and published,
// and the node stays locked. The transition hook runs after the wipe, so
// it can say truthfully whether the keys are gone.
func (m *Machine) Fire(ctx context.Context, ev Event, why Why) (Status, error) {
	m.fire.Lock()
	defer m.fire.Unlock()
	m.mu.Lock()
	from := m.st
	tr, ok := table[from.State][ev]
	if !ok {
		tr = transition{to: from.State}
	}
	to := from
	to.Warnings = slices.Clone(from.Warnings)
	now := m.now()
	if tr.to != from.State {
		to.State = tr.to
		to.Since = now
	}
	switch {
	case ev == EvUnlocked || ev == EvCheckOK:
		to.LastCheck = now
		if to.State == Unlocked {
			to.Reason, to.Cause, to.Action, to.Offered = "", "", "", ""
		}
	case to.State == from.State && (from.State == Unlocked || from.State == Locked && ev == EvTransient):
		// A transient event that does not change the state changes
		// nothing an operator reads: an unlocked node stays healthy, a
		// locked one keeps the reason it locked for.
	default:
		to.Reason, to.Cause, to.Action, to.Offered = why.Reason, why.Cause, why.Action, why.Offered
	}
	if to.State != Locked {
		to.WipeError = ""
	}
	changed := m.setMuHeld(from, to)
	m.mu.Unlock()
	var werr error
	if tr.wipe && m.hooks.Wipe != nil {
		werr = m.hooks.Wipe(ctx)
		m.mu.Lock()
		wiped := m.st
		wiped.Warnings = slices.Clone(m.st.Warnings)
		wiped.WipeError = ""
		if werr != nil {
			wiped.WipeError = werr.Error()
		}
		m.setMuHeld(m.st, wiped)
		to = wiped
		m.mu.Unlock()
	}
	if changed && m.hooks.Transition != nil {
		m.hooks.Transition(from, to, ev)
	}
	if werr != nil {
		return to, fmt.Errorf("wipe keys: %w", werr)
	}
	return to, nil
}

// Wipe runs the wipe hook again for a locked node whose keys could not be
// wiped; on success it clears WipeError.
func (m *Machine) Wipe(ctx context.Context) error {
	m.fire.Lock()
	defer m.fire.Unlock()
	if m.hooks.Wipe == nil {
		return nil
	}
	err := m.hooks.Wipe(ctx)
	m.mu.Lock()
	from := m.st
	to := from
	to.Warnings = slices.Clone(from.Warnings)
	to.WipeError = ""
	if err != nil {
		to.WipeError = err.Error()
	}
	m.setMuHeld(from, to)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("wipe keys: %w", err)
	}
	return nil
}

// setMuHeld stores to and publishes it if it differs from from; m.mu must
// be held.
func (m *Machine) setMuHeld(from, to Status) bool {
	m.st = to
	if from.equal(to) {
		return false
	}
	m.publishMuHeld(to)
	return true
}

// Update changes the informational fields (key version, warnings, sealer,
// key identity) without an event; subscribers hear of it when something
// changed.
func (m *Machine) Update(fn func(*Status)) Status {
	m.fire.Lock()
	defer m.fire.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	from := m.st
	to := from
	to.Warnings = slices.Clone(from.Warnings)
	fn(&to)
	to.State, to.Since, to.Reason, to.Cause, to.WipeError = from.State, from.Since, from.Reason, from.Cause, from.WipeError
	m.setMuHeld(from, to)
	return to
}

// subQueue is how many changes a subscriber may fall behind before it is
// dropped: a dropped subscriber's channel closes, and a plugin treats a
// closed watch as locked and reconnects.
const subQueue = 64

// Sub is one subscription.
type Sub struct {
	C  <-chan Status
	ch chan Status
	m  *Machine
}

// Subscribe returns a subscription whose channel holds the current status at
// once, then every change. Cancel it when done.
func (m *Machine) Subscribe() *Sub {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan Status, subQueue)
	s := &Sub{C: ch, ch: ch, m: m}
	cur := m.st
	cur.Warnings = slices.Clone(cur.Warnings)
	ch <- cur
	m.subs[s] = struct{}{}
	return s
}

// Cancel ends the subscription and closes its channel.
func (s *Sub) Cancel() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if _, ok := s.m.subs[s]; ok {
		delete(s.m.subs, s)
		close(s.ch)
	}
}

// Subscribers counts the live subscriptions.
func (m *Machine) Subscribers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.subs)
}

// publishMuHeld sends st to every subscriber and drops one that has fallen
// subQueue changes behind; m.mu must be held.
func (m *Machine) publishMuHeld(st Status) {
	for s := range m.subs {
		c := st
		c.Warnings = slices.Clone(st.Warnings)
		select {
		case s.ch <- c:
		default:
			delete(m.subs, s)
			close(s.ch)
		}
	}
}
