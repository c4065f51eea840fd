// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/internal/testenv"
	"github.com/byokd/byokd/kpemu"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// timeline records byokd's state changes as a Watch stream sees them.
type timeline struct {
	mu     sync.Mutex
	states []pb.State
	at     []time.Time
}

func (tl *timeline) add(s pb.State) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.states = append(tl.states, s)
	tl.at = append(tl.at, time.Now())
}

// servingThroughout reports whether byokd served keys during all of [from, to].
func (tl *timeline) servingThroughout(from, to time.Time) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.states) == 0 {
		return false
	}
	cur := tl.states[0] // the state in force at from
	for i, at := range tl.at {
		switch {
		case !at.After(from):
			cur = tl.states[i]
		case !at.After(to) && !keyprovider.Serving(tl.states[i]):
			return false
		}
	}
	return keyprovider.Serving(cur)
}

func (tl *timeline) saw(state pb.State, from, to time.Time) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i, at := range tl.at {
		if !at.Before(from) && !at.After(to) && tl.states[i] == state {
			return true
		}
	}
	return false
}

// TestChaos keeps 16 clients calling GetDataKey while Key Protect misbehaves:
// latency, 5xx, 429 with Retry-After, resets, then an outage shorter than
// offline_grace, then network-policy 401 bursts shorter than the
// confirmation window. byokd must not lock, must not fail one key call
// while it serves, must bound its Key Protect requests by its backoff, must
// lock within the poll interval + 1 s of a disable and unlock on enable.
// CHAOS_SECONDS sets each phase's length (make chaos uses a longer run).
func TestChaos(t *testing.T) {
	phase := 4 * time.Second
	if s, err := strconv.Atoi(os.Getenv("CHAOS_SECONDS")); err == nil && s > 0 {
		phase = time.Duration(s) * time.Second
	}
	k := testenv.StartKP(t)
	root := k.RootKey(t, "chaos-root")
	grace := 3*phase + 5*time.Second
	const window = 3 * time.Second
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, OfflineGrace: grace.String(), ConfirmWindow: window.String()})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)

	tl := &timeline{}
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	stream, err := c.Watch(wctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	tl.add(first.GetStatus().GetState())
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			tl.add(m.GetStatus().GetState())
		}
	}()

	var calls, failures, badFailures atomic.Int64
	var firstBad atomic.Value
	var failMu sync.Mutex
	var lockedFailures [][2]time.Time // start and end of FAILED_PRECONDITION calls: byokd said it was locked
	lctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "table:" + strconv.Itoa(w)
			for lctx.Err() == nil {
				start := time.Now()
				ctx, cancel := context.WithTimeout(lctx, 2*time.Second)
				_, err := c.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: id})
				cancel()
				end := time.Now()
				calls.Add(1)
				if err != nil && lctx.Err() == nil {
					failures.Add(1)
					// byokd's own answer says whether it was locked;
					// any other failure while the Watch timeline shows
					// it serving is a failed call of a serving node.
					if status.Code(err) == codes.FailedPrecondition {
						failMu.Lock()
						lockedFailures = append(lockedFailures, [2]time.Time{start, end})
						failMu.Unlock()
					} else if tl.servingThroughout(start, end) {
						badFailures.Add(1)
						firstBad.CompareAndSwap(nil, err.Error())
					}
				}
			}
		}()
	}

	kpRequests := func() int64 {
		var n int64
		for name, rs := range k.Stats() {
			if name != "unknown" {
				n += rs.Requests
			}
		}
		return n
	}
	setFaults := func(f kpemu.Faults) {
		if err := k.SetFaults(f); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	before := kpRequests()
	setFaults(kpemu.Faults{Latency: kpemu.Duration(200 * time.Millisecond), Jitter: kpemu.Duration(200 * time.Millisecond),
		ErrorRate: 0.3, ThrottleRate: 0.2, RetryAfter: kpemu.Duration(time.Second), ResetRate: 0.1})
	time.Sleep(phase)
	setFaults(kpemu.Faults{Outage: true})
	time.Sleep(phase)
	faulty := time.Since(start)
	reqs := kpRequests() - before
	// Network-policy bursts: every Key Protect request refused with 401
	// for 1.5 s, then 1 s of answers, over and over.
	setFaults(kpemu.Faults{})
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
	bursts, refused := 0, int64(0)
	for end := time.Now().Add(phase); time.Now().Before(end); bursts++ {
		k.ResetStats()
		setFaults(kpemu.Faults{Refusal: kpemu.RefuseNetworkPolicy})
		time.Sleep(window / 2)
		for _, rs := range k.Stats() {
			refused += rs.Status["401"]
		}
		setFaults(kpemu.Faults{})
		time.Sleep(time.Second)
	}
	t.Logf("%d network-policy bursts of %v (confirmation window %v): %d requests answered 401", bursts, window/2, window, refused)
	if refused == 0 {
		t.Fatal("no request was refused: the bursts did not reach byokd")
	}
	setFaults(kpemu.Faults{})
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 5*time.Second)
	if tl.saw(pb.State_STATE_LOCKED, start, time.Now()) {
		t.Fatalf("byokd locked during faults shorter than offline_grace (%v) or refusals shorter than the confirmation window (%v)", grace, window)
	}
	if !tl.saw(pb.State_STATE_DEGRADED, start, time.Now()) {
		t.Fatal("byokd never degraded: the faults did not reach it")
	}
	rate := float64(reqs) / faulty.Seconds()
	t.Logf("Key Protect requests during %v of faults and outage: %d (%.1f/s; counted at the emulator, including dropped ones)", faulty.Round(time.Millisecond), reqs, rate)
	// Poll interval 1 s, backoff from 1 s: a check is at most a token, a
	// metadata and an unwrap call; allow for the resets' client retries.
	if rate > 6 {
		t.Fatalf("Key Protect request rate %.1f/s is not bounded by the backoff", rate)
	}

	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	disabled := time.Now()
	b.WaitState(t, c, pb.State_STATE_LOCKED, 2*time.Second)
	t.Logf("locked %v after the disable", time.Since(disabled).Round(time.Millisecond))
	k.Do(t, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 3*time.Second)
	unlocked := time.Now()
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	wg.Wait()
	// Every "locked" answer came to a call that overlapped the lock: it
	// ended after the disable and started before the unlock was seen (a
	// call started just before the unlock may be answered just after it).
	for _, call := range lockedFailures {
		if call[1].Before(disabled) || call[0].After(unlocked) {
			t.Fatalf("byokd answered locked to a call from %v to %v, outside the lock (%v to %v)", call[0], call[1], disabled, unlocked)
		}
	}
	t.Logf("%d key calls, %d failed (all while locked)", calls.Load(), failures.Load())
	if n := badFailures.Load(); n > 0 {
		t.Fatalf("%d key calls failed while byokd served keys; first: %v", n, firstBad.Load())
	}
	if failures.Load() == 0 {
		t.Fatal("no key call failed while the node was locked: the check proves nothing")
	}
}
