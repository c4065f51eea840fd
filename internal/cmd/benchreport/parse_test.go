// SPDX-License-Identifier: Apache-2.0

package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseReadsResultLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Result
	}{{
		name: "GOMAXPROCS suffix stripped, custom metrics kept",
		in:   "goos: linux\nBenchmarkDerive-2         \t    3130\t     42819 ns/op\t     23354 derives/s\nPASS\n",
		want: []Result{{Name: "BenchmarkDerive", Procs: 2, N: 3130, Metrics: map[string]float64{"ns/op": 42819, "derives/s": 23354}}},
	}, {
		name: "-cpu 1: no suffix; B/op and allocs/op are units too",
		in:   "BenchmarkLoopbackEmptyCall      \t   46398\t     64658 ns/op\t    5403 B/op\t      63 allocs/op\n",
		want: []Result{{Name: "BenchmarkLoopbackEmptyCall", Procs: 1, N: 46398, Metrics: map[string]float64{"ns/op": 64658, "B/op": 5403, "allocs/op": 63}}},
	}, {
		name: "sub-benchmark, fractional and exponent values",
		in:   "BenchmarkKeyProvider/GetDataKey-16 \t 20000\t 170000 ns/op\t 1.5e+06 p99-ns\t 0.998 p50-x-empty\n",
		want: []Result{{Name: "BenchmarkKeyProvider/GetDataKey", Procs: 16, N: 20000, Metrics: map[string]float64{"ns/op": 170000, "p99-ns": 1.5e6, "p50-x-empty": 0.998}}},
	}, {
		name: "name and figures split by output in between",
		in:   "BenchmarkLockDetection-2   \t\nsome log line from a child\n       1\t98765 ns/op\t      1003 max-ms\n",
		want: []Result{{Name: "BenchmarkLockDetection", Procs: 2, N: 1, Metrics: map[string]float64{"ns/op": 98765, "max-ms": 1003}}},
	}, {
		name: "output after the name on its line, figures after output on theirs",
		in:   "BenchmarkLockDetection-2   \tlevel=INFO msg=started\nmore\nlevel=INFO msg=x       1\t98765 ns/op\t      443.0 p50-ms\n",
		want: []Result{{Name: "BenchmarkLockDetection", Procs: 2, N: 1, Metrics: map[string]float64{"ns/op": 98765, "p50-ms": 443}}},
	}, {
		name: "repeated with -count, in order",
		in:   "BenchmarkX-2 \t 10\t 5 ns/op\nBenchmarkX-2 \t 20\t 6 ns/op\n",
		want: []Result{
			{Name: "BenchmarkX", Procs: 2, N: 10, Metrics: map[string]float64{"ns/op": 5}},
			{Name: "BenchmarkX", Procs: 2, N: 20, Metrics: map[string]float64{"ns/op": 6}},
		},
	}, {
		name: "no results: failures and noise only",
		in:   "--- FAIL: BenchmarkFleet\n    fleet_bench_test.go:10: boom\nFAIL\nexit status 1\n",
		want: nil,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestParseRejectsMalformedFigures(t *testing.T) {
	for _, in := range []string{
		"BenchmarkX-2 \t 10\t 5 ns/op\t 7\n",          // a value without its unit
		"BenchmarkX-2 \t 10\t 5 ns/op\t abc p50-ms\n", // a unit without a number
	} {
		if got, err := Parse(strings.NewReader(in)); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, got)
		}
	}
}

func TestSheetNamesWhatIsMissing(t *testing.T) {
	res, err := Parse(strings.NewReader("BenchmarkFleet-2 \t 1\t 5 ns/op\t 1000 nodes\n"))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	sh := sheet{command: "go test -bench Fleet ./e2e", results: res, missing: &missing}
	if got := sh.get("BenchmarkFleet", "nodes"); got != 1000 {
		t.Errorf("nodes = %v, want 1000", got)
	}
	sh.get("BenchmarkFleet", "detect-p90-ms")
	sh.get("BenchmarkOther", "ns/op")
	want := []string{
		"BenchmarkFleet detect-p90-ms: no unit detect-p90-ms in its result in the output of go test -bench Fleet ./e2e",
		"BenchmarkOther ns/op: no result line in the output of go test -bench Fleet ./e2e",
	}
	if !reflect.DeepEqual(missing, want) {
		t.Errorf("missing =\n %q\nwant\n %q", missing, want)
	}
}
