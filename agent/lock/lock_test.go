// SPDX-License-Identifier: Apache-2.0

package lock

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTransitionTable(t *testing.T) {
	tests := []struct {
		from State
		ev   Event
		to   State
		wipe bool
	}{
		{Starting, EvUnlocked, Unlocked, false},
		{Starting, EvTransient, Starting, false},
		{Starting, EvAuthoritative, Locked, true},
		{Starting, EvCheckOK, Starting, false},
		{Unlocked, EvCheckOK, Unlocked, false},
		{Unlocked, EvTransient, Degraded, false},
		{Unlocked, EvAuthoritative, Locked, true},
		{Unlocked, EvGraceExpired, Locked, true},
		{Degraded, EvTransient, Degraded, false},
		{Degraded, EvCheckOK, Unlocked, false},
		{Degraded, EvUnlocked, Unlocked, false},
		{Degraded, EvAuthoritative, Locked, true},
		{Degraded, EvGraceExpired, Locked, true},
		{Locked, EvCheckOK, Locked, false},
		{Locked, EvTransient, Locked, false},
		{Locked, EvAuthoritative, Locked, false},
		{Locked, EvUnlocked, Unlocked, false},
	}
	for _, tc := range tests {
		t.Run(tc.from.String()+"+"+tc.ev.String(), func(t *testing.T) {
			var wiped atomic.Int32
			m := New(Status{}, Hooks{Wipe: func(context.Context) error { wiped.Add(1); return nil }})
			m.st.State = tc.from
			got, _ := m.Fire(context.Background(), tc.ev, Why{Reason: "why"})
			if got.State != tc.to {
				t.Fatalf("%v + %v = %v, want %v", tc.from, tc.ev, got.State, tc.to)
			}
			if (wiped.Load() > 0) != tc.wipe {
				t.Fatalf("wipe ran %d times, want %v", wiped.Load(), tc.wipe)
			}
		})
	}
}

// TestLockTellsSubscribersAtOnceThenWipes: subscribers hear LOCKED before
// the wipe ends (key calls are refused from that moment, and the plugin
// wipes its own keys on hearing it); the transition hook runs after the
// wipe.
func TestLockTellsSubscribersAtOnceThenWipes(t *testing.T) {
	release := make(chan struct{})
	var wiped atomic.Bool
	var hookSawWiped atomic.Bool
	m := New(Status{RootKeyID: "rk"}, Hooks{
		Wipe: func(context.Context) error { <-release; wiped.Store(true); return nil },
		Transition: func(_, to Status, _ Event) {
			if to.State == Locked {
				hookSawWiped.Store(wiped.Load())
			}
		},
	})
	sub := m.Subscribe()
	defer sub.Cancel()
	if st := <-sub.C; st.State != Starting {
		t.Fatalf("first status %v", st.State)
	}
	m.Fire(context.Background(), EvUnlocked, Why{})
	if st := <-sub.C; st.State != Unlocked || st.Reason != "" || st.LastCheck.IsZero() {
		t.Fatalf("after unlock: %+v", st)
	}
	done := make(chan struct{})
	go func() { m.Fire(context.Background(), EvAuthoritative, Why{Reason: "root key disabled"}); close(done) }()
	st := <-sub.C
	if st.State != Locked || st.Reason != "root key disabled" || wiped.Load() {
		t.Fatalf("subscribers heard %+v with wiped=%v, want LOCKED before the wipe ends", st, wiped.Load())
	}
	close(release)
	<-done
	if !hookSawWiped.Load() {
		t.Fatal("the transition hook ran before the wipe ended")
	}
	// A new reason while locked is a change; the same one is not.
	m.Fire(context.Background(), EvAuthoritative, Why{Reason: "root key deleted"})
	if st := <-sub.C; st.Reason != "root key deleted" {
		t.Fatalf("reason not updated: %+v", st)
	}
	m.Fire(context.Background(), EvAuthoritative, Why{Reason: "root key deleted"})
	// A transient failure on a locked node keeps the reason it locked for.
	m.Fire(context.Background(), EvTransient, Why{Reason: "Key Protect unreachable", Cause: "unreachable"})
	select {
	case st := <-sub.C:
		t.Fatalf("unchanged status published: %+v", st)
	default:
	}
}

func TestTransitionHookSeesEveryChangeInOrder(t *testing.T) {
	var mu sync.Mutex
	var seen []State
	m := New(Status{}, Hooks{Transition: func(from, to Status, ev Event) {
		mu.Lock()
		seen = append(seen, to.State)
		mu.Unlock()
	}})
	ctx := context.Background()
	for _, ev := range []Event{EvUnlocked, EvTransient, EvTransient, EvCheckOK, EvAuthoritative, EvUnlocked} {
		m.Fire(ctx, ev, Why{Reason: "r"})
	}
	want := []State{Unlocked, Degraded, Unlocked, Locked, Unlocked}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(want) {
		t.Fatalf("seen %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("seen %v, want %v", seen, want)
		}
	}
}

func TestSlowSubscriberIsDroppedNotBlocking(t *testing.T) {
	m := New(Status{}, Hooks{})
	slow := m.Subscribe()
	ctx := context.Background()
	for i := 0; i < subQueue+5; i++ {
		m.Update(func(s *Status) { s.KeyVersion = string(rune('a'+i%26)) + string(rune('0'+i/26)) })
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != subQueue {
		t.Fatalf("slow subscriber got %d before its channel closed, want %d", n, subQueue)
	}
	if m.Subscribers() != 0 {
		t.Fatal("dropped subscriber still counted")
	}
	slow.Cancel() // safe after the drop
	m.Fire(ctx, EvUnlocked, Why{Reason: ""})
}

func TestUpdateKeepsStateAndReason(t *testing.T) {
	m := New(Status{}, Hooks{})
	m.Fire(context.Background(), EvAuthoritative, Why{Reason: "root key disabled"})
	st := m.Update(func(s *Status) {
		s.State = Unlocked // ignored: only events change the state
		s.Warnings = []string{"root key expired"}
	})
	if st.State != Locked || st.Reason != "root key disabled" || len(st.Warnings) != 1 {
		t.Fatalf("update: %+v", st)
	}
}

func TestFailedWipeIsReturnedRecordedAndLeavesTheNodeLocked(t *testing.T) {
	fail := errors.New("tpm gone")
	var calls atomic.Int32
	m := New(Status{}, Hooks{Wipe: func(context.Context) error {
		if calls.Add(1) == 1 {
			return fail
		}
		return nil
	}})
	m.Fire(context.Background(), EvUnlocked, Why{})
	st, err := m.Fire(context.Background(), EvAuthoritative, Why{Reason: "root key disabled", Cause: "key-disabled"})
	if !errors.Is(err, fail) || st.State != Locked || !strings.Contains(st.WipeError, "tpm gone") {
		t.Fatalf("fire: %+v, %v", st, err)
	}
	if got := m.Status(); got.WipeError == "" || got.State != Locked || got.Cause != "key-disabled" {
		t.Fatalf("status after a failed wipe: %+v", got)
	}
	if err := m.Wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.Status(); got.WipeError != "" || got.State != Locked {
		t.Fatalf("status after the wipe succeeded: %+v", got)
	}
}

// TestStuckWipeDoesNotBlockStatus: while the sealer hangs in Wipe, Status
// answers at once, already LOCKED, so key calls are refused.
func TestStuckWipeDoesNotBlockStatus(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	m := New(Status{}, Hooks{Wipe: func(ctx context.Context) error {
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	m.Fire(context.Background(), EvUnlocked, Why{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Fire(ctx, EvAuthoritative, Why{Reason: "root key disabled"}); done <- err }()
	<-entered
	got := make(chan Status, 1)
	go func() { got <- m.Status() }()
	select {
	case st := <-got:
		if st.State != Locked {
			t.Fatalf("status during the wipe: %v, want LOCKED", st.State)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Status blocked behind a stuck wipe")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
