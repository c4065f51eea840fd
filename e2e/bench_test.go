// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// BenchmarkKeyProvider measures key provider calls to a byokd process over
// its unix socket against the baseline of an empty grpc.health.v1 Check on
// the same socket, in the same run. Each sub-benchmark reports p50 and p99;
// the key calls also report their p50 as a multiple of the baseline's.
//
//	go test -run '^$' -bench KeyProvider -benchtime 3s ./e2e
func BenchmarkKeyProvider(b *testing.B) {
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true})
	conn := d.Conn()
	c := pb.NewKeyProviderServiceClient(conn)
	d.WaitState(b, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	health := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	page := make([]byte, 4096)

	var baseline time.Duration
	run := func(name string, call func() error) {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, 1<<16)
			for b.Loop() {
				start := time.Now()
				if err := call(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
			if name == "EmptyHealthCheck" {
				baseline = p50
			} else if baseline > 0 {
				b.ReportMetric(float64(p50)/float64(baseline), "p50-x-empty")
			}
		})
	}
	run("EmptyHealthCheck", func() error {
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	run("GetDataKey", func() error {
		_, err := c.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: "table:orders"})
		return err
	})
	run("Encrypt4KiB", func() error {
		_, err := c.Encrypt(ctx, &pb.EncryptRequest{KeyId: "table:orders", Plaintext: page})
		return err
	})
}

// BenchmarkIdleRSS reports the resident memory of an unlocked byokd that
// has been idle for 3 s (polling Key Protect every second).
func BenchmarkIdleRSS(b *testing.B) {
	k := testenv.StartKP(b)
	root := k.RootKey(b, "bench-root")
	d := testenv.StartByokd(b, k, testenv.Options{RootKeyID: root, Provision: true})
	d.WaitState(b, d.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	time.Sleep(3 * time.Second)
	var kib int
	for b.Loop() {
		var err error
		if kib, err = rssKiB(d.PID()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(kib)/1024, "RSS-MiB")
}

func rssKiB(pid int) (int, error) {
	v, err := procStatus(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "kB")))
}

// procStatus is the value of a field of /proc/PID/status ("VmRSS",
// "Uid"), its spaces trimmed.
func procStatus(pid int, field string) (string, error) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
