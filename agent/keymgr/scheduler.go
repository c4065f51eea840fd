// SPDX-License-Identifier: Apache-2.0

package keymgr

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/byokd/byokd/internal/clock"
)

// Scheduler runs a Manager's rounds and decides the wait between them:
// the poll interval with jitter after an answer, backoff from 1 s (never
// below Retry-After, with jitter on top) while Key Protect fails, and never
// past the deadline a round names (the end of the offline grace or of a
// confirmation window).
type Scheduler struct {
	m        *Manager
	interval time.Duration
	jitter   float64
	clock    clock.Clock
	beat     func()
	rand     func(n int64) int64
	kick     chan struct{}

	backoff time.Duration
	spread  bool // the round after the first answer has been spread
}

// SchedulerConfig sets up a Scheduler.
type SchedulerConfig struct {
	Interval time.Duration
	// Jitter moves each wait by up to this fraction of Interval either way.
	Jitter float64
	// Beat, when set, is called at least every second of real time while
	// the loop is alive (the systemd watchdog listens to it).
	Beat func()
	// Rand returns a number in [0, n); math/rand/v2's by default.
	Rand func(n int64) int64
}

// NewScheduler returns the scheduler of m; Run starts it. Operator actions
// and Reseal on m wake it at once.
func NewScheduler(m *Manager, cfg SchedulerConfig) *Scheduler {
	s := &Scheduler{m: m, interval: cfg.Interval, jitter: cfg.Jitter, clock: m.cfg.Clock, beat: cfg.Beat, rand: cfg.Rand,
		kick: make(chan struct{}, 1)}
	if s.beat == nil {
		s.beat = func() {}
	}
	if s.rand == nil {
		s.rand = rand.Int64N
	}
	m.kick = s.Kick
	return s
}

// Kick runs the next round at once.
func (s *Scheduler) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run runs rounds until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	// The heartbeat is about this process being alive, so it runs on real
	// time whatever the manager's clock is.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.beat()
		res := s.m.Step(ctx)
		s.beat()
		if ctx.Err() != nil {
			return nil
		}
		t := s.clock.NewTimer(s.Next(res))
	waiting:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-tick.C:
				s.beat()
			case <-s.kick:
				t.Stop()
				break waiting
			case <-t.C():
				break waiting
			}
		}
	}
}

// Next returns the wait before the round after one that ended with r.
func (s *Scheduler) Next(r Result) time.Duration {
	var wait time.Duration
	switch r.Outcome {
	case Retry:
		wait = s.nextBackoff(r.RetryAfter)
	default:
		s.backoff = 0
		wait = s.next()
	}
	if !r.Deadline.IsZero() {
		if left := r.Deadline.Sub(s.clock.Now()); left < wait {
			wait = max(left, 0)
		}
	}
	return wait
}

// nextBackoff doubles from 1 s up to the poll interval, with jitter, and
// never below the server's Retry-After. A wait set by Retry-After gets the
// jitter on top: nodes a rate limit refused together would otherwise all
// come back in the same second and be refused together again.
func (s *Scheduler) nextBackoff(retryAfter time.Duration) time.Duration {
	switch {
	case s.backoff == 0:
		s.backoff = time.Second
	default:
		s.backoff *= 2
	}
	if s.backoff > s.interval {
		s.backoff = s.interval
	}
	half := int64(s.backoff / 2)
	wait := time.Duration(half + s.rand(half+1))
	if retryAfter > wait {
		wait = retryAfter + time.Duration(s.rand(half+1))
	}
	return wait
}

// next is the wait after an answer from Key Protect or a local failure:
// the interval with jitter, except after the process's first such round,
// which waits anywhere in one interval. Nodes started together (a fleet
// after a power cut) would otherwise go on polling in step; later rounds
// keep the spread, so a fleet that unlocks again after a disable is not
// spread a second time, which would add checks to the busiest interval.
func (s *Scheduler) next() time.Duration {
	if !s.spread {
		s.spread = true
		return time.Duration(s.rand(int64(s.interval))) + 1
	}
	d := s.interval
	if s.jitter > 0 {
		span := int64(float64(d) * s.jitter)
		d += time.Duration(s.rand(2*span+1) - span)
	}
	return d
}
