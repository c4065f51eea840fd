// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var testMachine = Machine{CPU: "Oxide Virtual Turin-like Processor", CPUs: 2, Memory: "23.5 GiB",
	Kernel: "Linux 6.1.0 x86_64", OS: "Debian GNU/Linux 12 (bookworm)", Go: "go version go1.26.8 linux/amd64",
	Date: "2026-11-28 10:00 UTC", Commit: "e5cfd78abcde"}

// cannedOutputs reads testdata/<section>.txt for every section.
func cannedOutputs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, s := range sectionNames {
		b, err := os.ReadFile(filepath.Join("testdata", s+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		out[s] = b
	}
	return out
}

func fullSettings(t *testing.T) Settings {
	t.Helper()
	s, err := settings(false, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReportFromCannedOutput(t *testing.T) {
	s := fullSettings(t)
	doc := buildAndRender(t, s, cannedOutputs(t))
	for _, want := range []string{
		// the machine
		"| CPU | Oxide Virtual Turin-like Processor |", "| CPUs | 2 |", "| memory | 23.5 GiB |",
		"| kernel | Linux 6.1.0 x86_64 |", "| OS | Debian GNU/Linux 12 (bookworm) |",
		"| Go | go version go1.26.8 linux/amd64 |", "| date | 2026-11-28 10:00 UTC |", "| commit | e5cfd78abcde |",
		// every command line, exactly
		"ROWS=1000000 scripts/bench-wiredtiger\n",
		"go test -run '^$' -bench KeyProvider -benchtime 3s ./e2e\n",
		"go test -run '^$' -bench IdleRSS ./e2e",
		"go test -run '^$' -bench . -cpu 1 -benchtime 3s ./kpemu\n",
		"go test -run '^$' -bench Derive -benchtime 2s -count 3 ./crypto/seal/tpm\n",
		"BENCH_DISABLES=50 go test -run '^$' -bench LockDetection -benchtime 1x ./e2e\n",
		"go test -run '^$' -bench StartToUnlocked -benchtime 10x ./e2e\n",
		"go test -run '^$' -bench LoadedRSS -benchtime 1x ./e2e\n",
		"go test -run '^$' -bench KeyProtectRequestsPerHour -benchtime 1x ./e2e\n",
		"FLEET_NODES=1000 go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./e2e\n",
		// WiredTiger: rows/s from the medians, ratios computed here, inside the markers
		"<!-- bench-wiredtiger:begin -->\n1,000,000 rows of 100 bytes, median of 3 rounds.",
		"| 11.3 | none (baseline) | 677,966 | 1.00× | 2,105,263 | 1.00× |",
		"| 11.3 | release | 710,732 | 1.05× | 2,288,330 | 1.09× |",
		"| 11.3 | strict | 408,497 | 0.60× | 394,166 | 0.19× |",
		"| 3.2 | strict | 400,000 | 0.60× | 500,000 | 0.25× |\n<!-- bench-wiredtiger:end -->",
		// key provider: p50 ratio as reported, p99 ratio computed
		"| empty `grpc.health.v1` Check (baseline) | 158 µs | 963 µs | 1.00× | 1.00× |",
		"| `Encrypt` of 4 KiB | 171 µs | 1.53 ms | 1.08× | 1.59× |",
		"17.1 MiB RSS",
		// kpemu: per second and ratio from ns/op
		"| empty call (baseline) | 15,466 | 64.7 µs | 1.00× |",
		"| unwrap through keyprotect-go-client, keep-alive transport | 7,901 | 127 µs | 1.96× |",
		"(a connection per call) | 2,885 | 347 µs | 5.36× |",
		// KMIP: medians of three runs, each against its baseline
		"go test -run '^$' -bench KMIP -benchtime 3s -count 3 ./agent/kmipd\n",
		"| Discover Versions on an established TLS connection (baseline) | 11,501 | 86.9 µs | 1.00× |",
		"| Get of a 256-bit key on the same connection | 10,101 | 99.0 µs | 1.14× |",
		"| a TLS connection with one Get, as Percona's client makes per operation | 513 | 1.95 ms | 1.04× |",
		// sealers: range over -count, ratio of medians
		"| memory (baseline) | 3,124,060–3,148,959 | 3,140,000 | 1.00× |",
		"| 16,636–19,589 | 18,000 | 0.00573× (1/174) |",
		// behaviour
		"| lock detection over 50 disables at random points of the poll cycle | p50 443 ms, p90 937 ms, max 1.00 s | poll interval 1.00 s | p50 0.44×, p90 0.94×, max 1.00× |",
		"| start to UNLOCKED, stored key (p50 of 10 starts) | 47.0 ms | start to socket served: 43.2 ms | 1.09× |",
		"| idle RSS, unlocked, 3 s of polls every second (IdleRSS) | 17.1 MiB | the LoadedRSS process before its load: 17.6 MiB | 0.97× |",
		"(peak) | 29.0 MiB | idle RSS of the same process: 17.6 MiB | 1.65× |",
		// Key Protect requests
		"| fast clock (poll 1 s, proof 10 s), counted over 30 s (baseline) | 3,720 | 1.03 | 1.00× |",
		"| **236** | 0.0656 | 0.0634× (1/16) |",
		"a fleet of 1,000 nodes makes about 65.6 requests/s",
		// fleet, the run with no limit: against the single node of the same make bench run
		"### limit=none\n\n1,000 nodes against one kpemu with no rate limit, poll interval 15.0 s.",
		"| Key Protect requests per node per hour, steady, default settings | 240 | one node at defaults (above): 236 | 1.02× |",
		"| 66.7 | nodes × one node at defaults: 65.6/s | 1.02× |",
		"| Key Protect requests in the busiest second of the steady window | 90.0 | the window's mean: 66.7/s | 1.35× |",
		"| 6.00 s | none: this run is the baseline of the rate-limited one | 1.00× |",
		"| root key enabled again: time until all nodes UNLOCKED | 16.0 s | poll interval 15.0 s | 1.07× |",
		// the rate-limited run: against the limit, the run with no limit, the interval
		"### limit=100\n\n1,000 nodes against one kpemu with a rate limit of 100 requests/s per instance, poll interval 15.0 s.",
		"| Key Protect requests per node per hour, steady, default settings | 241 | one node at defaults (above): 236 | 1.02× |",
		"| 66.9 | the emulator's rate limit: 100/s | 0.67× |",
		"| 42.0 s | the same with no rate limit: 6.00 s | 7.00× |",
		"| 429 answers during the start | 35 | 1,000 nodes | 0.0352 per node |",
		"| p50 7.40 s, p90 13.9 s, max 46.5 s | poll interval 15.0 s | p50 0.49×, p90 0.93×, max 3.10× |",
		"| root key enabled again: time until all nodes UNLOCKED | 31.5 s | the same with no rate limit: 16.0 s | 1.97×; 2.10× the poll interval |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"<no value>", "NaN", "Not run", "Quick smoke", "Incomplete"} {
		if strings.Contains(doc, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", doc)
	}
}

func TestReportFailsLoudlyOnAMissingFigure(t *testing.T) {
	tests := []struct {
		name    string
		section string
		edit    func(string) string
		want    []string
	}{{
		name:    "a fleet unit missing",
		section: secFleet,
		edit:    func(s string) string { return regexp.MustCompile(`\s+\S+ detect-p90-ms`).ReplaceAllString(s, "") },
		want:    []string{"BenchmarkFleet/limit=none detect-p90-ms", "BenchmarkFleet/limit=100 detect-p90-ms", "-bench Fleet"},
	}, {
		name:    "the fleet benchmark failed to report at all",
		section: secFleet,
		edit:    func(string) string { return "--- FAIL: BenchmarkFleet\nFAIL\n" },
		want:    []string{"BenchmarkFleet/limit=none nodes: no result line"},
	}, {
		name:    "one fleet run lacks a unit",
		section: secFleet,
		edit: func(s string) string {
			return regexp.MustCompile(`\s+\S+ unlock-all-s\n(PASS)`).ReplaceAllString(s, "\n$1")
		},
		want: []string{"BenchmarkFleet/limit=100 unlock-all-s: no unit unlock-all-s"},
	}, {
		name:    "the lock detection baseline missing",
		section: secLockDetection,
		edit:    func(s string) string { return strings.Replace(s, "1000 interval-ms", "", 1) },
		want:    []string{"BenchmarkLockDetection interval-ms"},
	}, {
		name:    "a key provider sub-benchmark missing",
		section: secKeyProvider,
		edit: func(s string) string {
			return regexp.MustCompile(`(?m)^BenchmarkKeyProvider/Encrypt4KiB.*\n`).ReplaceAllString(s, "")
		},
		want: []string{"BenchmarkKeyProvider/Encrypt4KiB p50-ns: no result line"},
	}, {
		name:    "a kpemu baseline missing",
		section: secKpemu,
		edit: func(s string) string {
			return regexp.MustCompile(`(?m)^BenchmarkLoopbackEmptyCall.*\n`).ReplaceAllString(s, "")
		},
		want: []string{"BenchmarkLoopbackEmptyCall ns/op"},
	}, {
		name:    "a KMIP baseline missing",
		section: secKMIP,
		edit: func(s string) string {
			return regexp.MustCompile(`(?m)^BenchmarkKMIP/TLSConnect.*\n`).ReplaceAllString(s, "")
		},
		want: []string{"BenchmarkKMIP/TLSConnect ns/op"},
	}, {
		name:    "a WiredTiger mode missing",
		section: secWiredTiger,
		edit:    func(s string) string { return strings.Replace(s, "strict@11.3 2.448 2.537\n", "", 1) },
		want:    []string{"strict@11.3", "scripts/bench-wiredtiger"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fullSettings(t)
			outputs := cannedOutputs(t)
			outputs[tt.section] = []byte(tt.edit(string(outputs[tt.section])))
			_, err := build(testMachine, s, commands(s, "/tmp/wt"), outputs)
			if err == nil {
				t.Fatal("build succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestSkippedSectionsAreMarked(t *testing.T) {
	s, err := settings(true, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	outputs := cannedOutputs(t)
	delete(outputs, secFleet)
	doc := buildAndRender(t, s, outputs)
	for _, want := range []string{"**Quick smoke run**", "**Incomplete**: skipped with `-skip`: fleet.",
		"FLEET_NODES=50 FLEET_STEADY=10 go test", "BENCH_DISABLES=5 go test", "ROWS=20000 scripts/bench-wiredtiger"} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if fleet := doc[strings.Index(doc, "## Fleet simulation"):]; !strings.Contains(fleet, "Not run.") {
		t.Errorf("fleet section does not say it was not run:\n%s", fleet)
	}

	delete(outputs, secKPRequests)
	if _, err := build(testMachine, s, commands(s, "/tmp/wt"), map[string][]byte{secFleet: cannedOutputs(t)[secFleet]}); err == nil ||
		!strings.Contains(err.Error(), "kprequests") {
		t.Errorf("fleet without its kprequests baseline: err = %v, want one naming kprequests", err)
	}
}

func TestSettingsFromEnvironment(t *testing.T) {
	env := map[string]string{"ROWS": "5000", "FLEET_NODES": "20"}
	s, err := settings(true, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if s.Rows != 5000 || s.FleetNodes != 20 || s.Disables != 5 {
		t.Errorf("settings = %+v, want ROWS 5000, FLEET_NODES 20, quick BENCH_DISABLES 5", s)
	}
	if _, err := settings(false, func(k string) string { return map[string]string{"BENCH_DISABLES": "x"}[k] }); err == nil {
		t.Error("BENCH_DISABLES=x accepted")
	}
}

func TestFleetWithoutItsUnlimitedRunFails(t *testing.T) {
	s := fullSettings(t)
	outputs := cannedOutputs(t)
	var kept []string
	for _, l := range strings.Split(string(outputs[secFleet]), "\n") {
		if !strings.HasPrefix(l, "BenchmarkFleet/limit=none") {
			kept = append(kept, l)
		}
	}
	outputs[secFleet] = []byte(strings.Join(kept, "\n"))
	if _, err := build(testMachine, s, commands(s, "/tmp/wt"), outputs); err == nil ||
		!strings.Contains(err.Error(), "BenchmarkFleet/limit=none nodes: no result line") {
		t.Errorf("fleet without its limit=none baseline: err = %v, want one naming it", err)
	}
}

// buildAndRender builds the report of s from outputs and renders it.
func buildAndRender(t *testing.T, s Settings, outputs map[string][]byte) string {
	t.Helper()
	rep, err := build(testMachine, s, commands(s, "/tmp/wt"), outputs)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	b, err := render(rep)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return string(b)
}
