// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// hammer runs GetDataKey from clients goroutines, each on its own
// connection, until total calls are made or ctx ends; it returns the sorted
// latencies and the number of errors.
func hammer(ctx context.Context, t *testing.T, b *testenv.Byokd, clients, total int) ([]time.Duration, int64) {
	t.Helper()
	var next, errs atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for w := range clients {
		c := b.Client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "table:" + strconv.Itoa(w%8)
			for ctx.Err() == nil && next.Add(1) <= int64(total) {
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.GetDataKey(cctx, &pb.GetDataKeyRequest{KeyId: id})
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(start))
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all, errs.Load()
}

// TestLoad: 64 concurrent clients make LOAD_CALLS GetDataKey calls (CI
// 100,000; make load 1,000,000). Every call succeeds; p50 and p99 are
// reported.
func TestLoad(t *testing.T) {
	total := envInt("LOAD_CALLS", 100_000)
	k := testenv.StartKP(t)
	root := k.RootKey(t, "load-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	start := time.Now()
	lat, errs := hammer(context.Background(), t, b, 64, total)
	took := time.Since(start)
	if errs != 0 || len(lat) != total {
		t.Fatalf("%d errors, %d of %d calls answered", errs, len(lat), total)
	}
	t.Logf("%d GetDataKey calls from 64 clients in %v (%.0f/s): p50 %v, p99 %v, max %v, 0 errors",
		total, took.Round(time.Millisecond), float64(total)/took.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}

var metricLine = regexp.MustCompile(`(?m)^(go_goroutines|process_resident_memory_bytes) ([0-9.e+]+)$`)

func scrape(t *testing.T, b *testenv.Byokd) (goroutines, rss float64) {
	t.Helper()
	for _, m := range metricLine.FindAllStringSubmatch(httpGet(t, "http://"+opsAddr(t, b)+"/metrics"), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "go_goroutines" {
			goroutines = v
		} else {
			rss = v
		}
	}
	if goroutines == 0 || rss == 0 {
		t.Fatal("no go_goroutines or process_resident_memory_bytes in the metrics")
	}
	return goroutines, rss
}

// TestSoak runs load for SOAK_SECONDS (CI 20; make soak 600) with Key
// Protect polled every second, sampling byokd's goroutines and RSS: both must
// stay flat — no leak per call or per poll.
func TestSoak(t *testing.T) {
	secs := envInt("SOAK_SECONDS", 20)
	k := testenv.StartKP(t)
	root := k.RootKey(t, "soak-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	done := make(chan struct{})
	var calls int
	go func() {
		lat, _ := hammer(ctx, t, b, 8, 1<<62)
		calls = len(lat)
		close(done)
	}()
	// Warm up, then sample.
	time.Sleep(time.Duration(secs) * time.Second / 5)
	g0, r0 := scrape(t, b)
	gMax, rMax := g0, r0
	tick := time.NewTicker(time.Duration(secs) * time.Second / 10)
	defer tick.Stop()
sampling:
	for {
		select {
		case <-ctx.Done():
			break sampling
		case <-tick.C:
			g, r := scrape(t, b)
			gMax, rMax = max(gMax, g), max(rMax, r)
		}
	}
	<-done
	g1, r1 := scrape(t, b)
	t.Logf("%d calls in %ds: goroutines %v at warm-up, %v at most, %v at the end; RSS %.1f MiB at warm-up, %.1f MiB at most, %.1f MiB at the end",
		calls, secs, g0, gMax, g1, r0/(1<<20), rMax/(1<<20), r1/(1<<20))
	if gMax > g0+20 {
		t.Fatalf("goroutines grew from %v to %v", g0, gMax)
	}
	if rMax > r0*1.5+8<<20 {
		t.Fatalf("RSS grew from %.1f to %.1f MiB", r0/(1<<20), rMax/(1<<20))
	}
}
