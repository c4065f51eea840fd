// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Settings are the knobs of one report run: the full run's by default,
// a few minutes' smoke with Quick.
type Settings struct {
	Quick        bool
	Rows         int    // WiredTiger rows per mode (ROWS)
	Disables     int    // lock detection disables (BENCH_DISABLES)
	FleetNodes   int    // fleet size (FLEET_NODES)
	FleetSteady  string // the fleet's steady window in seconds (FLEET_STEADY), "" for its default
	ProviderTime string // -benchtime of the key provider benchmark
	IdleTime     string // -benchtime of IdleRSS ("" for go test's default)
	KpemuTime    string // -benchtime of the kpemu benchmarks
	SealTime     string // -benchtime of the sealer benchmarks
	StartRuns    string // -benchtime of StartToUnlocked
}

// settings returns the full or quick settings; ROWS, BENCH_DISABLES and
// FLEET_NODES in the environment override either.
func settings(quick bool, getenv func(string) string) (Settings, error) {
	s := Settings{Rows: 1000000, Disables: 50, FleetNodes: 1000,
		ProviderTime: "3s", KpemuTime: "3s", SealTime: "2s", StartRuns: "10x"}
	if quick {
		s = Settings{Quick: true, Rows: 20000, Disables: 5, FleetNodes: 50, FleetSteady: "10",
			ProviderTime: "200ms", IdleTime: "1x", KpemuTime: "200ms", SealTime: "200ms", StartRuns: "3x"}
	}
	for _, o := range []struct {
		env string
		v   *int
	}{{"ROWS", &s.Rows}, {"BENCH_DISABLES", &s.Disables}, {"FLEET_NODES", &s.FleetNodes}} {
		e := getenv(o.env)
		if e == "" {
			continue
		}
		n, err := strconv.Atoi(e)
		if err != nil || n < 1 {
			return Settings{}, fmt.Errorf("%s=%q: want a positive integer", o.env, e)
		}
		*o.v = n
	}
	return s, nil
}

// Command is one benchmark command of the report. Env is part of the
// command line the report shows; Plumbing is not (where make bench
// collects output).
type Command struct {
	Section  string
	Env      []string
	Args     []string
	Plumbing []string
}

// The sections, in the report's order; -skip takes these names.
const (
	secWiredTiger    = "wiredtiger"
	secKeyProvider   = "keyprovider"
	secIdleRSS       = "idlerss"
	secKpemu         = "kpemu"
	secKMIP          = "kmip"
	secSealers       = "sealers"
	secLockDetection = "lockdetection"
	secStart         = "start"
	secLoadedRSS     = "loadedrss"
	secKPRequests    = "kprequests"
	secFleet         = "fleet"
)

var sectionNames = []string{secWiredTiger, secKeyProvider, secIdleRSS, secKpemu, secKMIP, secSealers,
	secLockDetection, secStart, secLoadedRSS, secKPRequests, secFleet}

// commands lists every command the report runs; wtOut is the file
// scripts/bench-wiredtiger writes its medians to.
func commands(s Settings, wtOut string) []Command {
	gotest := func(section string, env []string, args ...string) Command {
		return Command{Section: section, Env: env, Args: append([]string{"go", "test", "-run", "^$"}, args...)}
	}
	fleetEnv := []string{"FLEET_NODES=" + strconv.Itoa(s.FleetNodes)}
	if s.FleetSteady != "" {
		fleetEnv = append(fleetEnv, "FLEET_STEADY="+s.FleetSteady)
	}
	idle := []string{"-bench", "IdleRSS"}
	if s.IdleTime != "" {
		idle = append(idle, "-benchtime", s.IdleTime)
	}
	return []Command{
		{Section: secWiredTiger, Env: []string{"ROWS=" + strconv.Itoa(s.Rows)}, Args: []string{"scripts/bench-wiredtiger"},
			Plumbing: []string{"BENCH_WIREDTIGER_OUT=" + wtOut}},
		gotest(secKeyProvider, nil, "-bench", "KeyProvider", "-benchtime", s.ProviderTime, "./e2e"),
		gotest(secIdleRSS, nil, append(idle, "./e2e")...),
		gotest(secKpemu, nil, "-bench", ".", "-cpu", "1", "-benchtime", s.KpemuTime, "./kpemu"),
		gotest(secKMIP, nil, "-bench", "KMIP", "-benchtime", s.KpemuTime, "-count", "3", "./agent/kmipd"),
		gotest(secSealers, nil, "-bench", "Derive", "-benchtime", s.SealTime, "-count", "3", "./crypto/seal/tpm"),
		gotest(secLockDetection, []string{"BENCH_DISABLES=" + strconv.Itoa(s.Disables)}, "-bench", "LockDetection", "-benchtime", "1x", "./e2e"),
		gotest(secStart, nil, "-bench", "StartToUnlocked", "-benchtime", s.StartRuns, "./e2e"),
		gotest(secLoadedRSS, nil, "-bench", "LoadedRSS", "-benchtime", "1x", "./e2e"),
		gotest(secKPRequests, nil, "-bench", "KeyProtectRequestsPerHour", "-benchtime", "1x", "./e2e"),
		gotest(secFleet, fleetEnv, "-bench", "Fleet", "-benchtime", "1x", "-timeout", "30m", "./e2e"),
	}
}

// String is the command line as a shell would take it.
func (c Command) String() string {
	var parts []string
	for _, w := range append(append([]string(nil), c.Env...), c.Args...) {
		parts = append(parts, shellQuote(w))
	}
	return strings.Join(parts, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=,+@%-]+$`)

func shellQuote(w string) string {
	if shellSafe.MatchString(w) {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// run runs c, its output streaming to the terminal, and returns its
// standard output. goCmd replaces "go" (make's $(GO)).
func (c Command) run(ctx context.Context, goCmd string, stdout, stderr io.Writer) ([]byte, error) {
	args := append([]string(nil), c.Args...)
	if args[0] == "go" {
		args[0] = goCmd
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), c.Env...), c.Plumbing...)
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(stdout, &buf)
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return buf.Bytes(), fmt.Errorf("%s: %w", c, err)
	}
	return buf.Bytes(), nil
}
