// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/node"
	"github.com/byokd/byokd/internal/testenv"
	"github.com/byokd/byokd/kpemu"
)

// A fleet is many simulated nodes in this process against one kpemu. Each
// node is a byokd node built by node.New — its own Key Protect client
// (transport and IAM token), wrapped key store in its own folder, memory
// sealer, lock machine, key manager and scheduler — without the gRPC server
// and ops listener, which play no part in how a fleet loads Key Protect.
type fleet struct {
	kp     *testenv.KP
	root   string
	nodes  []*fleetNode
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type fleetNode struct {
	*node.Node

	locks      atomic.Int64 // transitions into LOCKED
	lockedAt   atomic.Int64 // unix nanoseconds of the last transition into LOCKED
	unlockedAt atomic.Int64 // ... into UNLOCKED
}

// fleetConfig is the fleet's size and its nodes' poll settings.
type fleetConfig struct {
	nodes int
	poll  config.Poll
}

// startFleet builds every node, then starts them all at once, as after a
// fleet-wide power cut, each provisioning its wrapped key.
func startFleet(t testing.TB, k *testenv.KP, root string, cfg fleetConfig) *fleet {
	t.Helper()
	base, err := os.MkdirTemp("", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{kp: k, root: root}
	t.Cleanup(func() {
		f.stop()
		os.RemoveAll(base)
	})
	for i := range cfg.nodes {
		n := &fleetNode{}
		dir := filepath.Join(base, fmt.Sprintf("node-%04d", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c := k.NodeConfig(root, dir, fmt.Sprintf("fleet-%04d", i))
		c.KeyProtect.Timeout = config.Default().KeyProtect.Timeout
		c.Poll = cfg.poll
		c.Sealer.Backend = "memory"
		if n.Node, err = node.New(c, node.Deps{APIKey: testenv.APIKey, NoOps: true,
			OnTransition: func(from, to lock.Status, _ lock.Event) {
				if from.State == to.State {
					return
				}
				switch to.State {
				case lock.Locked:
					n.locks.Add(1)
					n.lockedAt.Store(time.Now().UnixNano())
				case lock.Unlocked:
					n.unlockedAt.Store(time.Now().UnixNano())
				}
			}}); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		f.nodes = append(f.nodes, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	for _, n := range f.nodes {
		f.wg.Go(func() { _ = n.Run(ctx) })
	}
	return f
}

func (f *fleet) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.wg.Wait()
	f.cancel = nil
	for _, n := range f.nodes {
		n.Close()
	}
}

// waitAll waits until every node is in state, and returns for each how long
// after since it got there (its last transition into state).
func (f *fleet) waitAll(t testing.TB, state lock.State, since time.Time, timeout time.Duration) []time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		in := 0
		for _, n := range f.nodes {
			if n.Machine.Status().State == state {
				in++
			}
		}
		if in == len(f.nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d of %d nodes %s (%s)", timeout, in, len(f.nodes), state, f.states())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := make([]time.Duration, len(f.nodes))
	for i, n := range f.nodes {
		at := n.unlockedAt.Load()
		if state == lock.Locked {
			at = n.lockedAt.Load()
		}
		out[i] = time.Unix(0, at).Sub(since)
	}
	slices.Sort(out)
	return out
}

// states counts the nodes in each state, for a failure message.
func (f *fleet) states() string {
	count := map[string]int{}
	for _, n := range f.nodes {
		count[n.Machine.Status().State.String()]++
	}
	return fmt.Sprint(count)
}

func (f *fleet) locks() int64 {
	var sum int64
	for _, n := range f.nodes {
		sum += n.locks.Load()
	}
	return sum
}

// kpLoad is what the emulator saw: Key Protect requests (IAM apart), 429s.
type kpLoad struct {
	requests, iam, throttled int64
}

func fleetLoad(st map[string]kpemu.RouteStats) kpLoad {
	var l kpLoad
	for route, rs := range st {
		if route == "iam_token" {
			l.iam += rs.Requests
			continue
		}
		l.requests += rs.Requests
		l.throttled += rs.Status["429"]
	}
	return l
}

// setKey disables or enables the fleet's root key as the customer would.
func (f *fleet) setKey(t testing.TB, enable bool) {
	t.Helper()
	if enable {
		f.kp.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, f.root) })
		return
	}
	f.kp.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, f.root) })
}

// TestFleet runs 100 nodes polling every second against one kpemu whose
// instance accepts 150 requests/s in bursts of 20, so that the simultaneous
// start is throttled: every node still unlocks, none locks on a 429, the
// steady request rate stays near one per node per interval, all lock within
// interval + 1 s (plus a throttled retry) of a disable and unlock after the
// enable. FLEET_NODES changes the size.
func TestFleet(t *testing.T) {
	n := envInt("FLEET_NODES", 100)
	poll := config.DefaultPoll()
	poll.Interval = config.Duration(time.Second)
	interval := time.Second
	k := testenv.StartKP(t)
	root := k.RootKey(t, "fleet-root")
	limit := float64(n) * 1.5 / interval.Seconds()
	if err := k.SetFaults(kpemu.Faults{RateLimit: limit, Burst: 20}); err != nil {
		t.Fatal(err)
	}
	k.ResetStats()
	start := time.Now()
	f := startFleet(t, k, root, fleetConfig{nodes: n, poll: poll})
	up := f.waitAll(t, lock.Unlocked, start, 60*time.Second)
	startLoad := fleetLoad(k.Stats())
	t.Logf("%d nodes unlocked in %v; %d Key Protect requests, %d answered 429", n, up[len(up)-1], startLoad.requests, startLoad.throttled)
	if startLoad.throttled == 0 {
		t.Fatalf("a start of %d nodes against a burst of 20 saw no 429: the rate limit is not exercised", n)
	}

	k.ResetStats()
	steady := 5 * time.Second
	time.Sleep(steady)
	l := fleetLoad(k.Stats())
	rate := float64(l.requests) / steady.Seconds()
	t.Logf("steady: %.1f Key Protect requests/s from %d nodes (%d throttled)", rate, n, l.throttled)
	if want := float64(n) / interval.Seconds(); rate > 1.5*want || rate < 0.5*want {
		t.Fatalf("steady rate %.1f/s, want about %.0f/s (one metadata check per node per interval)", rate, want)
	}
	if locks := f.locks(); locks != 0 {
		t.Fatalf("%d nodes locked while the root key was active and only throttled", locks)
	}

	t0 := time.Now()
	f.setKey(t, false)
	det := f.waitAll(t, lock.Locked, t0, 10*time.Second)
	t.Logf("lock detection: p50 %v, max %v", det[len(det)/2], det[len(det)-1])
	// A node can be between a throttled check and its retry (Retry-After
	// 1 s) when the key is disabled.
	if bound := interval + time.Duration(float64(interval)*poll.Jitter) + 2*time.Second; det[len(det)-1] > bound {
		t.Fatalf("slowest node locked %v after the disable, want within %v", det[len(det)-1], bound)
	}

	t1 := time.Now()
	f.setKey(t, true)
	back := f.waitAll(t, lock.Unlocked, t1, 30*time.Second)
	t.Logf("all unlocked %v after the enable", back[len(back)-1])
	f.stop()
	if locks := f.locks(); locks != int64(n) {
		t.Fatalf("%d transitions into LOCKED, want one per node (%d)", locks, n)
	}
}

// BenchmarkFleet simulates 1,000 nodes (FLEET_NODES) at byokd's default poll
// settings against one kpemu, once with no rate limit — the baseline — and
// once with a per-instance quota of 100 requests/s (FLEET_KP_LIMIT; the real
// service's quota is not published). Each run starts every node at once,
// measures a steady window (FLEET_STEADY, default 60 s), then disables the
// root key and measures each node's detection latency against the poll
// interval, then enables it again and measures the recovery.
//
//	go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./e2e
func BenchmarkFleet(b *testing.B) {
	n := envInt("FLEET_NODES", 1000)
	limit := envInt("FLEET_KP_LIMIT", 100)
	steady := time.Duration(envInt("FLEET_STEADY", 60)) * time.Second
	for _, limit := range []int{0, limit} {
		name := fmt.Sprintf("limit=%d", limit)
		if limit == 0 {
			name = "limit=none"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				benchFleet(b, n, float64(limit), steady)
			}
		})
	}
}

func benchFleet(b *testing.B, n int, limit float64, steady time.Duration) {
	cfg := fleetConfig{nodes: n, poll: config.DefaultPoll()}
	interval := time.Duration(cfg.poll.Interval)
	k := testenv.StartKP(b)
	root := k.RootKey(b, "fleet-root")
	if err := k.SetFaults(kpemu.Faults{RateLimit: limit}); err != nil {
		b.Fatal(err)
	}
	k.ResetStats()
	start := time.Now()
	f := startFleet(b, k, root, cfg)
	up := f.waitAll(b, lock.Unlocked, start, 10*time.Minute)
	startLoad := fleetLoad(k.Stats())

	// The steady window, sampled each second for the busiest second.
	k.ResetStats()
	var l kpLoad
	var peak int64
	for range int(steady / time.Second) {
		time.Sleep(time.Second)
		cur := fleetLoad(k.Stats())
		peak = max(peak, cur.requests+cur.iam-l.requests-l.iam)
		l = cur
	}

	t0 := time.Now()
	f.setKey(b, false)
	det := f.waitAll(b, lock.Locked, t0, 10*interval)

	k.ResetStats()
	t1 := time.Now()
	f.setKey(b, true)
	back := f.waitAll(b, lock.Unlocked, t1, 10*time.Minute)
	recovery := fleetLoad(k.Stats())
	f.stop()

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(float64(n), "nodes")
	b.ReportMetric(limit, "kp-limit-req/s")
	b.ReportMetric(up[len(up)-1].Seconds(), "start-all-unlocked-s")
	b.ReportMetric(float64(startLoad.throttled), "start-429s")
	b.ReportMetric(float64(l.requests+l.iam)/steady.Seconds(), "steady-req/s")
	b.ReportMetric(float64(peak), "steady-peak-req/s")
	b.ReportMetric(float64(l.throttled), "steady-429s")
	b.ReportMetric(float64(l.requests+l.iam)/steady.Hours()/float64(n), "req/node/h")
	b.ReportMetric(ms(interval), "interval-ms")
	b.ReportMetric(ms(det[len(det)/2]), "detect-p50-ms")
	b.ReportMetric(ms(det[len(det)*9/10]), "detect-p90-ms")
	b.ReportMetric(ms(det[len(det)-1]), "detect-max-ms")
	b.ReportMetric(float64(det[len(det)-1])/float64(interval), "detect-max-x-interval")
	b.ReportMetric(back[len(back)-1].Seconds(), "unlock-all-s")
	b.ReportMetric(float64(recovery.throttled), "recover-429s")
}
