// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// BenchmarkLockDetection disables the root key 50 times (BENCH_DISABLES) and
// measures how long byokd takes to report LOCKED, against the poll interval
// (1 s, no jitter) as the baseline: the ratio says how much of an interval
// detection costs on top of the wait for the next poll.
//
//	go test -run '^$' -bench LockDetection -benchtime 1x ./e2e
func BenchmarkLockDetection(b *testing.B) {
	n := envInt("BENCH_DISABLES", 50)
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true})
	c := d.Client()
	d.WaitState(b, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	var lat []time.Duration
	for b.Loop() {
		lat = lat[:0]
		for range n {
			stream, err := c.Watch(context.Background(), &pb.WatchRequest{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				b.Fatal(err)
			}
			// Disable at a random point of the poll cycle.
			time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
			k.Do(b, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
			start := time.Now()
			for {
				m, err := stream.Recv()
				if err != nil {
					b.Fatal(err)
				}
				if m.GetStatus().GetState() == pb.State_STATE_LOCKED {
					break
				}
			}
			lat = append(lat, time.Since(start))
			k.Do(b, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
			d.WaitState(b, c, pb.State_STATE_UNLOCKED, 5*time.Second)
		}
	}
	slices.Sort(lat)
	interval := time.Second
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Milliseconds()), "p90-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(interval), "max-x-interval")
	b.ReportMetric(float64(interval.Milliseconds()), "interval-ms")
}

// BenchmarkStartToUnlocked starts byokd on a stored wrapped key and measures
// the time until it reports UNLOCKED, against the baseline of the same
// process's start to serving its socket (locked).
//
//	go test -run '^$' -bench StartToUnlocked -benchtime 10x ./e2e
func BenchmarkStartToUnlocked(b *testing.B) {
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	first := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true})
	first.WaitState(b, first.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	if err := first.Stop(); err != nil {
		b.Fatal(err)
	}
	var toSocket, toUnlocked []time.Duration
	for b.Loop() {
		start := time.Now()
		d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Dir: first.Dir})
		toSocket = append(toSocket, time.Since(start))
		d.WaitState(b, d.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
		toUnlocked = append(toUnlocked, time.Since(start))
		if err := d.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(toSocket)
	slices.Sort(toUnlocked)
	s, u := toSocket[len(toSocket)/2], toUnlocked[len(toUnlocked)/2]
	b.ReportMetric(float64(s.Microseconds())/1000, "socket-p50-ms")
	b.ReportMetric(float64(u.Microseconds())/1000, "unlocked-p50-ms")
	b.ReportMetric(float64(u)/float64(s), "unlocked-x-socket")
}

// BenchmarkLoadedRSS reports byokd's RSS under 64 clients of GetDataKey,
// against its idle RSS in the same run.
//
//	go test -run '^$' -bench LoadedRSS -benchtime 1x ./e2e
func BenchmarkLoadedRSS(b *testing.B) {
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true})
	d.WaitState(b, d.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	time.Sleep(2 * time.Second)
	idle, err := rssKiB(d.PID())
	if err != nil {
		b.Fatal(err)
	}
	var peak atomic.Int64
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for ctx.Err() == nil {
				if r, err := rssKiB(d.PID()); err == nil && int64(r) > peak.Load() {
					peak.Store(int64(r))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		loadFor(ctx, b, d, 64)
		cancel()
		<-sampled
	}
	b.ReportMetric(float64(idle)/1024, "idle-MiB")
	b.ReportMetric(float64(peak.Load())/1024, "loaded-MiB")
	b.ReportMetric(float64(peak.Load())/float64(idle), "loaded-x-idle")
}

// loadFor runs GetDataKey from n clients until ctx ends.
func loadFor(ctx context.Context, b *testing.B, d *testenv.Byokd, n int) {
	b.Helper()
	done := make(chan struct{}, n)
	for w := 0; w < n; w++ {
		c := d.Client()
		go func() {
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, _ = c.GetDataKey(cctx, &pb.GetDataKeyRequest{KeyId: "table:bench"})
				cancel()
			}
		}()
	}
	for w := 0; w < n; w++ {
		<-done
	}
}

// BenchmarkKeyProtectRequestsPerHour measures, at the emulator, the Key
// Protect and IAM requests one byokd makes, on a fast clock (poll 1 s, proof
// 10 s, for 30 s), and scales each kind to the default settings (poll 15 s,
// proof 10 min, IAM tokens of 1 h): metadata checks scale with the poll
// interval, proof unwraps with the proof interval, token requests with the
// token lifetime. The baseline is the fast run's own request rate.
//
//	go test -run '^$' -bench KeyProtectRequestsPerHour -benchtime 1x ./e2e
func BenchmarkKeyProtectRequestsPerHour(b *testing.B) {
	run := 30 * time.Second
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true, Proof: "10s"})
	d.WaitState(b, d.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	var metadata, unwrap, tokens float64
	for b.Loop() {
		k.ResetStats()
		time.Sleep(run)
		st := k.Stats()
		metadata = float64(st["key_metadata"].Requests)
		unwrap = float64(st["action_unwrap"].Requests)
		tokens = float64(st["iam_token"].Requests)
	}
	perHour := func(n float64) float64 { return n * float64(time.Hour) / float64(run) }
	fast := perHour(metadata + unwrap + tokens)
	// Default settings (config.DefaultPoll): polls every 15 s against the
	// fast run's 1 s (1/15 of its rate), proofs every 10 min against its
	// 10 s (1/60), and a token an hour (the fast run's 1 h tokens give the
	// same rate).
	poll := config.DefaultPoll()
	def := perHour(metadata)*float64(time.Second)/float64(poll.Interval) +
		perHour(unwrap)*float64(10*time.Second)/float64(poll.ProofInterval) + perHour(tokens)
	b.ReportMetric(fast, "fast-req/h")
	b.ReportMetric(def, "default-req/h")
	b.ReportMetric(def/fast, "default-x-fast")
}
