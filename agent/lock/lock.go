// Package lock is byokd's lock state machine: one table of state × event →
// state + actions, and the subscribers that react to every change.
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

// Event is what happened, as the poller saw it.
type Event int

// The events.
const (
	// EvUnlocked: the wrapped key was unwrapped and sealed.
	EvUnlocked Event = iota + 1
	// EvCheckOK: Key Protect answered a check and the root key is usable.
	EvCheckOK
	// EvTransient: Key Protect could not be reached (network, 5xx, 429).
	EvTransient
	// EvAuthoritative: Key Protect said the root key may not be used.
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
	State      State
	Reason     string
	Since      time.Time // when State was entered
	LastCheck  time.Time // last time Key Protect answered
	RootKeyID  string
	KeyVersion string
	Sealer     string
	Generation uint32
	Warnings   []string
}

func (s Status) equal(o Status) bool {
	return s.State == o.State && s.Reason == o.Reason && s.LastCheck.Equal(o.LastCheck) &&
		s.RootKeyID == o.RootKeyID && s.KeyVersion == o.KeyVersion && s.Sealer == o.Sealer &&
		s.Generation == o.Generation && slices.Equal(s.Warnings, o.Warnings)
}

// Hooks are the machine's actions.
type Hooks struct {
	// Wipe destroys every key; it runs before a Locked state is published.
	Wipe func(ctx context.Context) error
	// Transition runs after every state change (audit log, metrics, lock
	// actions), in order, without the machine's lock held.
	Transition func(from, to Status, ev Event)
}

// Machine holds the state and its subscribers. It is safe for concurrent use.
type Machine struct {
	hooks Hooks
	now   func() time.Time

	fire sync.Mutex // serialises Fire and Update, so hooks see changes in order
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

// Status returns the current status.
func (m *Machine) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.st
	s.Warnings = slices.Clone(s.Warnings)
	return s
}

// Fire applies an event with its reason and returns the new status. Every
// subscriber hears of a change; a lock wipes the keys first.
func (m *Machine) Fire(ctx context.Context, ev Event, reason string) Status {
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
	if tr.to != from.State {
		to.State = tr.to
		to.Since = m.now()
	}
	switch {
	case ev == EvUnlocked || ev == EvCheckOK:
		to.LastCheck = m.now()
		if to.State == Unlocked {
			to.Reason = ""
		}
	case to.State == from.State && from.State == Unlocked:
		// A transient event that does not change the state changes
		// nothing an operator reads.
	default:
		to.Reason = reason
	}
	if tr.wipe && m.hooks.Wipe != nil {
		// Keys go before anyone is told the node is locked, and before
		// the new state lets a key call through to the wiped sealer.
		_ = m.hooks.Wipe(ctx)
	}
	m.st = to
	changed := !from.equal(to)
	if changed {
		m.publishLocked(to)
	}
	m.mu.Unlock()
	if changed && m.hooks.Transition != nil {
		m.hooks.Transition(from, to, ev)
	}
	return to
}

// Update changes the informational fields (key version, warnings, sealer)
// without an event; subscribers hear of it when something changed.
func (m *Machine) Update(fn func(*Status)) Status {
	m.fire.Lock()
	defer m.fire.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	from := m.st
	to := from
	to.Warnings = slices.Clone(from.Warnings)
	fn(&to)
	to.State, to.Since, to.Reason = from.State, from.Since, from.Reason
	m.st = to
	if !from.equal(to) {
		m.publishLocked(to)
	}
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

func (m *Machine) publishLocked(st Status) {
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
