package poller

import (
	"testing"
	"time"
)

func TestNextBackoff(t *testing.T) {
	p := New(Config{Interval: 15 * time.Second})
	// Doubles from 1 s, jittered into [b/2, b], capped at the interval.
	for i, b := range []time.Duration{1, 2, 4, 8, 15, 15} {
		b *= time.Second
		if w := p.nextBackoff(0); w < b/2 || w > b {
			t.Fatalf("round %d: wait %v, want within [%v, %v]", i, w, b/2, b)
		}
	}
	p.backoff = 0
	if w := p.nextBackoff(0); w > time.Second {
		t.Fatalf("after a reset the first wait is %v, want at most 1s", w)
	}
}

func TestNextBackoffRetryAfter(t *testing.T) {
	// Never below Retry-After, and spread above it: many nodes refused at
	// once must not all come back at the same instant.
	seen := map[time.Duration]bool{}
	for range 200 {
		p := New(Config{Interval: 15 * time.Second})
		w := p.nextBackoff(3 * time.Second)
		if w < 3*time.Second || w > 3*time.Second+time.Second/2 {
			t.Fatalf("wait %v with Retry-After 3s and a 1s backoff, want within [3s, 3.5s]", w)
		}
		seen[w] = true
	}
	if len(seen) < 100 {
		t.Fatalf("200 nodes told Retry-After 3s picked only %d distinct waits", len(seen))
	}
}

func TestOnlyTheFirstRoundIsSpreadOverAnInterval(t *testing.T) {
	var early, late int
	for range 1000 {
		p := New(Config{Interval: 15 * time.Second, Jitter: 0.1})
		w := p.next()
		if w <= 0 || w > 15*time.Second {
			t.Fatalf("first wait %v, want within (0, 15s]", w)
		}
		if w < 5*time.Second {
			early++
		}
		if w > 10*time.Second {
			late++
		}
		// Later rounds keep the interval, with its ±10% jitter.
		for range 3 {
			if w := p.next(); w < 13500*time.Millisecond || w > 16500*time.Millisecond {
				t.Fatalf("a later wait of %v, want within 15s ±10%%", w)
			}
		}
	}
	// Uniform: about a third in each; the jittered interval alone would
	// put none below 13.5 s.
	if early < 200 || late < 200 {
		t.Fatalf("of 1000 first waits %d were under 5s and %d over 10s, want both near 333", early, late)
	}
}
