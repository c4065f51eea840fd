// SPDX-License-Identifier: Apache-2.0

package clock

import (
	"testing"
	"time"
)

func TestFakeFiresTimersInOrderWhenAdvanced(t *testing.T) {
	f := NewFake(time.Unix(100, 0))
	a, b := f.NewTimer(2*time.Second), f.NewTimer(5*time.Second)
	stopped := f.NewTimer(time.Second)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of a pending timer reports true once")
	}
	if d, ok := f.Next(); !ok || d != 2*time.Second || f.Pending() != 2 {
		t.Fatalf("next %v %v, pending %d", d, ok, f.Pending())
	}
	f.Advance(3 * time.Second)
	select {
	case at := <-a.C():
		if !at.Equal(time.Unix(103, 0)) {
			t.Fatalf("fired at %v", at)
		}
	default:
		t.Fatal("a 2s timer did not fire after 3s")
	}
	select {
	case <-b.C():
		t.Fatal("a 5s timer fired after 3s")
	default:
	}
	f.Advance(2 * time.Second)
	<-b.C()
	if b.Stop() {
		t.Fatal("Stop of a fired timer reports true")
	}
	if now := f.Now(); !now.Equal(time.Unix(105, 0)) {
		t.Fatalf("now %v", now)
	}
	if z := f.NewTimer(0); len(z.C()) != 1 {
		t.Fatal("a zero timer does not fire at once")
	}
}

func TestWaitTimerSeesATimerMadeByAnotherGoroutine(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	if f.WaitTimer(10 * time.Millisecond) {
		t.Fatal("no timer, yet WaitTimer says one is pending")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		f.NewTimer(time.Second)
	}()
	if !f.WaitTimer(5 * time.Second) {
		t.Fatal("WaitTimer missed the timer")
	}
}

func TestRealClockTimerFires(t *testing.T) {
	c := Real()
	start := c.Now()
	<-c.NewTimer(time.Millisecond).C()
	if c.Now().Sub(start) < time.Millisecond {
		t.Fatal("the real timer fired early")
	}
}
