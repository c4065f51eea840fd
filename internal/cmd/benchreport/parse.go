// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Result is one result line of go test -bench: the benchmark's name
// without the -GOMAXPROCS suffix, its iterations, and every value it
// printed by unit (ns/op, B/op, allocs/op and each b.ReportMetric unit).
type Result struct {
	Name    string
	Procs   int
	N       int64
	Metrics map[string]float64
}

var (
	// A whole result line: name, iterations, then value-unit pairs.
	resultLine = regexp.MustCompile(`^(Benchmark\S*)\s+(\d+)\s+(\S.*)$`)
	// A name without figures: go test prints the name before running the
	// benchmark, so output written meanwhile (a child process's stdout,
	// say) follows it on the same line, and the figures come at the end
	// of a later line.
	nameFirst = regexp.MustCompile(`^(Benchmark\S*)(\s|$)`)
	figures   = regexp.MustCompile(`(?:^|\s)(\d+)\s+([-+.0-9eE]+ ns/op.*)$`)
	procsTail = regexp.MustCompile(`^(.*)-(\d+)$`)
)

// Parse reads go test -bench output and returns its result lines in order.
// Lines that are not results (goos, pkg, PASS, logs) are skipped; a result
// line whose figures do not parse is an error.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	pending := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		var name, iters, rest string
		if m := resultLine.FindStringSubmatch(line); m != nil && strings.Contains(m[3], " ns/op") {
			name, iters, rest = m[1], m[2], m[3]
		} else if m := nameFirst.FindStringSubmatch(line); m != nil {
			pending = m[1]
			continue
		} else if m := figures.FindStringSubmatch(line); m != nil && pending != "" {
			name, iters, rest = pending, m[1], m[2]
		} else {
			continue
		}
		pending = ""
		res, err := parseResult(name, iters, rest)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return out, nil
}

func parseResult(name, iters, rest string) (Result, error) {
	res := Result{Name: name, Procs: 1, Metrics: map[string]float64{}}
	// go test appends -GOMAXPROCS to the name unless it is 1.
	if m := procsTail.FindStringSubmatch(name); m != nil {
		p, err := strconv.Atoi(m[2])
		if err == nil {
			res.Name, res.Procs = m[1], p
		}
	}
	n, err := strconv.ParseInt(iters, 10, 64)
	if err != nil {
		return Result{}, fmt.Errorf("iterations %q: %w", iters, err)
	}
	res.N = n
	f := strings.Fields(rest)
	if len(f)%2 != 0 {
		return Result{}, fmt.Errorf("odd number of value and unit fields")
	}
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Result{}, fmt.Errorf("value of %s: %w", f[i+1], err)
		}
		res.Metrics[f[i+1]] = v
	}
	return res, nil
}

// sheet answers lookups of one command's results and remembers every
// lookup that found nothing, so one run reports all that is missing.
type sheet struct {
	command string
	results []Result
	missing *[]string
}

// all returns the unit's value in every result of the benchmark, in order
// (several with -count).
func (s sheet) all(bench, unit string) []float64 {
	var vs []float64
	found := false
	for _, r := range s.results {
		if r.Name != bench {
			continue
		}
		found = true
		if v, ok := r.Metrics[unit]; ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		what := "no unit " + unit + " in its result"
		if !found {
			what = "no result line"
		}
		*s.missing = append(*s.missing, fmt.Sprintf("%s %s: %s in the output of %s", bench, unit, what, s.command))
	}
	return vs
}

// get returns the unit's value in the benchmark's last result.
func (s sheet) get(bench, unit string) float64 {
	vs := s.all(bench, unit)
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)-1]
}

// subs returns, in order of first appearance, the names of bench's
// sub-benchmarks (bench/...).
func (s sheet) subs(bench string) []string {
	var subs []string
	for _, r := range s.results {
		if strings.HasPrefix(r.Name, bench+"/") && !slices.Contains(subs, r.Name) {
			subs = append(subs, r.Name)
		}
	}
	return subs
}
