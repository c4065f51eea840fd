// SPDX-License-Identifier: Apache-2.0

// Command benchreport runs every benchmark of docs/BENCHMARKS.md and
// writes the whole report: each command line, each figure with its ratio
// against a baseline measured in the same run, and the machine they ran
// on. make bench runs it from the repository root.
//
//	go run ./internal/cmd/benchreport [-quick] [-out file] [-skip section,...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/byokd/byokd/internal/atomicfile"
)

const (
	docPath   = "docs/BENCHMARKS.md"
	quickPath = "bin/BENCHMARKS-quick.md"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run() error {
	envQuick := os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0"
	quick := flag.Bool("quick", envQuick, "a few-minute smoke: short benchtimes and sizes (default from BENCH_QUICK=1)")
	out := flag.String("out", "", "the report to write (default "+docPath+", or "+quickPath+" with -quick)")
	skip := flag.String("skip", "", "comma-separated sections not to run, for development: "+strings.Join(sectionNames, ","))
	flag.Parse()
	if *out == "" {
		*out = docPath
		if *quick {
			*out = quickPath
		}
	}
	skipped := map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(sectionNames, s) {
			return fmt.Errorf("-skip %s: no such section (have %s)", s, strings.Join(sectionNames, ", "))
		}
		skipped[s] = true
	}
	if filepath.Clean(*out) == docPath && (*quick || len(skipped) > 0) {
		return fmt.Errorf("%s holds only full runs: give -out for a quick or partial run", docPath)
	}
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	set, err := settings(*quick, os.Getenv)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	wt, err := os.CreateTemp("", "benchreport-wiredtiger-*.txt")
	if err != nil {
		return err
	}
	wt.Close()
	defer os.Remove(wt.Name())

	machine := describe(ctx, goCmd, *out)
	cmds := commands(set, wt.Name())
	outputs := map[string][]byte{}
	for _, c := range cmds {
		if skipped[c.Section] {
			fmt.Fprintf(os.Stderr, "\n=== %s: skipped\n", c.Section)
			continue
		}
		fmt.Fprintf(os.Stderr, "\n=== %s: %s\n", c.Section, c)
		stdout, err := c.run(ctx, goCmd, os.Stdout, os.Stderr)
		if err != nil {
			return fmt.Errorf("%w; %s left as it was", err, *out)
		}
		if c.Section == secWiredTiger {
			if stdout, err = os.ReadFile(wt.Name()); err != nil {
				return err
			}
		}
		outputs[c.Section] = stdout
	}
	rep, err := build(machine, set, cmds, outputs)
	if err != nil {
		return fmt.Errorf("%w\n%s left as it was", err, *out)
	}
	doc, err := render(rep)
	if err != nil {
		return err
	}
	if err := writeAtomic(*out, doc); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\nwrote %s\n", *out)
	return nil
}

// writeAtomic replaces path with data through a temporary file in the same
// folder and a rename, so a reader sees the old report or the new one.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
