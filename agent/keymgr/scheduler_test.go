// SPDX-License-Identifier: Apache-2.0

package keymgr

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/internal/clock"
)

func newScheduler(c *clock.Fake, rnd func(int64) int64) *Scheduler {
	m := New(Config{Clock: c, Machine: lock.New(lock.Status{}, lock.Hooks{})})
	return NewScheduler(m, SchedulerConfig{Interval: 15 * time.Second, Jitter: 0.1, Rand: rnd})
}

// Rand functions that pick the low end, the high end and the middle.
var (
	low  = func(int64) int64 { return 0 }
	high = func(n int64) int64 { return n - 1 }
)

func TestBackoffDoublesFromOneSecondToTheInterval(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	lo, hi := newScheduler(c, low), newScheduler(c, high)
	for i, b := range []time.Duration{1, 2, 4, 8, 15, 15} {
		b *= time.Second
		if w := lo.Next(Result{Outcome: Retry}); w != b/2 {
			t.Fatalf("round %d: shortest wait %v, want %v", i, w, b/2)
		}
		if w := hi.Next(Result{Outcome: Retry}); w != b {
			t.Fatalf("round %d: longest wait %v, want %v", i, w, b)
		}
	}
	lo.Next(Result{Outcome: Served})
	if w := lo.Next(Result{Outcome: Retry}); w != time.Second/2 {
		t.Fatalf("after an answer the backoff starts again at 1s: %v", w)
	}
}

func TestRetryAfterIsHonouredWithJitterOnTop(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	if w := newScheduler(c, low).Next(Result{Outcome: Retry, RetryAfter: 3 * time.Second}); w != 3*time.Second {
		t.Fatalf("wait %v, want at least Retry-After 3s", w)
	}
	if w := newScheduler(c, high).Next(Result{Outcome: Retry, RetryAfter: 3 * time.Second}); w != 3*time.Second+time.Second/2 {
		t.Fatalf("wait %v, want 3s plus at most half the backoff", w)
	}
	seen := map[time.Duration]bool{}
	for range 200 {
		seen[newScheduler(c, rand.Int64N).Next(Result{Outcome: Retry, RetryAfter: 3 * time.Second})] = true
	}
	if len(seen) < 100 {
		t.Fatalf("200 nodes told Retry-After 3s picked only %d distinct waits", len(seen))
	}
}

func TestDeadlineCutsTheWait(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	s := newScheduler(c, high)
	s.Next(Result{Outcome: Served})
	if w := s.Next(Result{Outcome: Retry, RetryAfter: time.Minute, Deadline: c.Now().Add(7 * time.Second)}); w != 7*time.Second {
		t.Fatalf("wait %v past a deadline 7s away", w)
	}
	if w := s.Next(Result{Outcome: Retry, Deadline: c.Now().Add(-time.Second)}); w != 0 {
		t.Fatalf("wait %v with the deadline passed, want 0", w)
	}
}

func TestOnlyTheFirstRoundIsSpreadOverAnInterval(t *testing.T) {
	c := clock.NewFake(time.Unix(0, 0))
	if w := newScheduler(c, low).Next(Result{Outcome: Served}); w != 1 {
		t.Fatalf("first wait at the low end %v, want 1ns", w)
	}
	s := newScheduler(c, high)
	if w := s.Next(Result{Outcome: Locked}); w != 15*time.Second {
		t.Fatalf("first wait at the high end %v, want the interval", w)
	}
	for range 3 {
		if w := s.Next(Result{Outcome: Served}); w != 16500*time.Millisecond {
			t.Fatalf("a later wait at the high end %v, want 15s +10%%", w)
		}
	}
	if w := newScheduler(c, low).spreadThen(); w != 13500*time.Millisecond {
		t.Fatalf("a later wait at the low end %v, want 15s -10%%", w)
	}
}

// spreadThen returns the wait of the second answered round.
func (s *Scheduler) spreadThen() time.Duration {
	s.Next(Result{Outcome: Served})
	return s.Next(Result{Outcome: Served})
}

// TestRunWaitsOnTheClockAndWakesOnAKick drives the loop on the fake clock:
// a round runs when the timer fires or when an operator action kicks.
func TestRunWaitsOnTheClockAndWakesOnAKick(t *testing.T) {
	r := newRig(t)
	s := NewScheduler(r.m, SchedulerConfig{Interval: 15 * time.Second, Rand: high})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitRounds := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); r.kp.count("metadata") < want; {
			if time.Now().After(deadline) {
				t.Fatalf("%d rounds, want %d", r.kp.count("metadata"), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitRounds(1)
	if !r.clock.WaitTimer(5 * time.Second) {
		t.Fatal("the loop does not wait on the clock")
	}
	if d, _ := r.clock.Next(); d != 15*time.Second {
		t.Fatalf("first wait %v, want 15s", d)
	}
	r.clock.Advance(15 * time.Second)
	waitRounds(2)
	s.Kick()
	waitRounds(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
