// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

//go:embed report.md.tmpl
var reportTemplate string

// Table is a markdown table.
type Table struct {
	Head []string
	Rows [][]string
}

func (t *Table) add(cells ...string) { t.Rows = append(t.Rows, cells) }

// String renders the table in markdown.
func (t Table) String() string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	line(t.Head)
	sep := make([]string, len(t.Head))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range t.Rows {
		line(r)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Section is one command's part of the report.
type Section struct {
	Title   string // a sub-part's name, as a fleet run's "limit=100"
	Command string
	Table   Table
	Note    string // a sentence of figures beside the table
}

// Report is what the template renders. A section skipped with -skip is
// nil.
type Report struct {
	Machine  Machine
	Settings Settings
	// Commands by section name, so prose can cite any of them.
	Commands map[string]string

	WiredTiger  *Section
	KeyProvider *Section
	IdleRSS     *Section
	Kpemu       *Section
	KMIP        *Section
	Sealers     *Section
	// Behaviour is the lock detection, start and memory table: rows from
	// the lockdetection, start, idlerss and loadedrss commands.
	Behaviour  *Section
	KPRequests *Section
	// Fleet has a section per run of BenchmarkFleet (its sub-benchmarks).
	Fleet   []Section
	Skipped []string
}

// build computes every figure and ratio from the commands' outputs (by
// section; the wiredtiger one is the script's medians file). A section
// with no output was skipped. Every metric the report needs and the
// output lacks is an error naming the benchmark and unit.
func build(m Machine, s Settings, cmds []Command, outputs map[string][]byte) (Report, error) {
	r := Report{Machine: m, Settings: s, Commands: map[string]string{}}
	var missing []string
	sheets := map[string]sheet{}
	for _, c := range cmds {
		r.Commands[c.Section] = c.String()
		out, ok := outputs[c.Section]
		if !ok {
			r.Skipped = append(r.Skipped, c.Section)
			continue
		}
		if c.Section == secWiredTiger {
			continue
		}
		res, err := Parse(bytes.NewReader(out))
		if err != nil {
			return Report{}, fmt.Errorf("output of %s: %w", c, err)
		}
		sheets[c.Section] = sheet{command: c.String(), results: res, missing: &missing}
	}
	has := func(sec string) bool { _, ok := outputs[sec]; return ok }

	if has(secWiredTiger) {
		sec, err := wiredTiger(outputs[secWiredTiger])
		if err != nil {
			return Report{}, fmt.Errorf("%s: %w", r.Commands[secWiredTiger], err)
		}
		sec.Command = r.Commands[secWiredTiger]
		r.WiredTiger = sec
	}
	if sh, ok := sheets[secKeyProvider]; ok {
		r.KeyProvider = keyProvider(sh)
	}
	if sh, ok := sheets[secIdleRSS]; ok {
		r.IdleRSS = &Section{Command: sh.command, Note: mib(sh.get("BenchmarkIdleRSS", "RSS-MiB"))}
	}
	if sh, ok := sheets[secKpemu]; ok {
		r.Kpemu = kpemu(sh)
	}
	if sh, ok := sheets[secKMIP]; ok {
		r.KMIP = kmipSection(sh)
	}
	if sh, ok := sheets[secSealers]; ok {
		r.Sealers = sealers(sh)
	}
	r.Behaviour = behaviour(sheets, s)
	var oneNode float64 // Key Protect requests per node per hour at defaults
	if sh, ok := sheets[secKPRequests]; ok {
		r.KPRequests, oneNode = kpRequests(sh, s)
	}
	if sh, ok := sheets[secFleet]; ok {
		if !has(secKPRequests) {
			return Report{}, fmt.Errorf("the fleet section needs the kprequests section's figure as its baseline: do not skip kprequests")
		}
		r.Fleet = fleet(sh, oneNode)
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		missing = slices.Compact(missing)
		return Report{}, fmt.Errorf("missing benchmark figures:\n  %s", strings.Join(missing, "\n  "))
	}
	return r, nil
}

// wiredTiger reads scripts/bench-wiredtiger's medians file: "rows N",
// "rounds N", then "<mode>@<line> <insert seconds> <read seconds>" for
// none, release and strict on each WiredTiger line, in the order measured.
// Each line's modes are compared with its own none.
func wiredTiger(raw []byte) (*Section, error) {
	vals := map[string][]float64{}
	var lines []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if _, wt, ok := strings.Cut(f[0], "@"); ok && !slices.Contains(lines, wt) {
			lines = append(lines, wt)
		}
		for _, v := range f[1:] {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("medians file line %q: %w", line, err)
			}
			vals[f[0]] = append(vals[f[0]], x)
		}
	}
	need := map[string]int{"rows": 1, "rounds": 1}
	if len(lines) == 0 {
		return nil, fmt.Errorf("medians file: no WiredTiger line measured")
	}
	for _, wt := range lines {
		for _, mode := range []string{"none", "release", "strict"} {
			need[mode+"@"+wt] = 2
		}
	}
	for k, n := range need {
		if len(vals[k]) != n {
			return nil, fmt.Errorf("medians file: want %d value(s) for %s, have %d", n, k, len(vals[k]))
		}
	}
	rows := vals["rows"][0]
	sec := &Section{
		Note:  fmt.Sprintf("%s rows of 100 bytes, median of %s rounds.", count(rows), count(vals["rounds"][0])),
		Table: Table{Head: []string{"WiredTiger", "mode", "insert rows/s", "insert ratio", "read rows/s", "read ratio"}},
	}
	for _, wt := range lines {
		base := vals["none@"+wt]
		for _, mode := range []string{"none", "release", "strict"} {
			v := vals[mode+"@"+wt]
			name := mode
			if mode == "none" {
				name = "none (baseline)"
			}
			sec.Table.add(wt, name, count(div(rows, v[0])), ratio(div(base[0], v[0])), count(div(rows, v[1])), ratio(div(base[1], v[1])))
		}
	}
	return sec, nil
}

func keyProvider(sh sheet) *Section {
	const bench = "BenchmarkKeyProvider/"
	sec := &Section{Command: sh.command,
		Table: Table{Head: []string{"call", "p50", "p99", "p50 / empty call", "p99 / empty call"}}}
	p50 := sh.get(bench+"EmptyHealthCheck", "p50-ns")
	p99 := sh.get(bench+"EmptyHealthCheck", "p99-ns")
	sec.Table.add("empty `grpc.health.v1` Check (baseline)", duration(p50), duration(p99), ratio(1), ratio(1))
	for _, c := range []struct{ name, label string }{
		{"GetDataKey", "`GetDataKey`"},
		{"Encrypt4KiB", "`Encrypt` of 4 KiB"},
	} {
		sec.Table.add(c.label, duration(sh.get(bench+c.name, "p50-ns")), duration(sh.get(bench+c.name, "p99-ns")),
			ratio(sh.get(bench+c.name, "p50-x-empty")), ratio(div(sh.get(bench+c.name, "p99-ns"), p99)))
	}
	return sec
}

func kpemu(sh sheet) *Section {
	sec := &Section{Command: sh.command,
		Table: Table{Head: []string{"benchmark", "per second", "time per call", "ratio to the empty call (time)"}}}
	base := sh.get("BenchmarkLoopbackEmptyCall", "ns/op")
	for _, b := range []struct{ name, label string }{
		{"BenchmarkLoopbackEmptyCall", "empty call (baseline)"},
		{"BenchmarkClientUnwrap", "unwrap through keyprotect-go-client, keep-alive transport"},
		{"BenchmarkClientUnwrapNoKeepAlive", "unwrap through the client's own `DefaultTransport` (a connection per call)"},
	} {
		ns := sh.get(b.name, "ns/op")
		sec.Table.add(b.label, count(div(1e9, ns)), duration(ns), ratio(div(ns, base)))
	}
	return sec
}

// kmipSection: medians of -count runs, each operation against its
// baseline.
func kmipSection(sh sheet) *Section {
	sec := &Section{Command: sh.command,
		Table: Table{Head: []string{"benchmark", "per second", "time per call (median)", "ratio to its baseline (time)"}}}
	const b = "BenchmarkKMIP/"
	discover := median(sh.all(b+"DiscoverVersions", "ns/op"))
	connect := median(sh.all(b+"TLSConnect", "ns/op"))
	for _, r := range []struct {
		name, label string
		base        float64
	}{
		{"DiscoverVersions", "Discover Versions on an established TLS connection (baseline)", discover},
		{"Get", "Get of a 256-bit key on the same connection", discover},
		{"TLSConnect", "a TLS connection with a client certificate, handshake and close (baseline)", connect},
		{"ConnectGet", "a TLS connection with one Get, as Percona's client makes per operation", connect},
	} {
		ns := median(sh.all(b+r.name, "ns/op"))
		sec.Table.add(r.label, count(div(1e9, ns)), duration(ns), ratio(div(ns, r.base)))
	}
	return sec
}

func sealers(sh sheet) *Section {
	sec := &Section{Command: sh.command,
		Table: Table{Head: []string{"backend", "derivations/s (each run)", "median", "ratio (medians)"}}}
	mem := sh.all("BenchmarkMemoryDerive", "derives/s")
	tpm := sh.all("BenchmarkDerive", "derives/s")
	sec.Table.add("memory (baseline)", span(mem, count), count(median(mem)), ratio(1))
	sec.Table.add("tpm (swtpm, salted HMAC session with parameter encryption)", span(tpm, count), count(median(tpm)),
		ratio(div(median(tpm), median(mem))))
	return sec
}

// behaviour is the table of lock detection, start to unlocked and RSS, from
// whichever of their commands ran; nil if none did.
func behaviour(sheets map[string]sheet, s Settings) *Section {
	sec := &Section{Table: Table{Head: []string{"measure", "value", "baseline (same run)", "ratio"}}}
	if sh, ok := sheets[secLockDetection]; ok {
		const b = "BenchmarkLockDetection"
		iv := sh.get(b, "interval-ms")
		p50, p90, mx := sh.get(b, "p50-ms"), sh.get(b, "p90-ms"), sh.get(b, "max-ms")
		sec.Table.add(fmt.Sprintf("lock detection over %s disables at random points of the poll cycle", count(float64(s.Disables))),
			fmt.Sprintf("p50 %s, p90 %s, max %s", duration(p50*1e6), duration(p90*1e6), duration(mx*1e6)),
			"poll interval "+duration(iv*1e6),
			fmt.Sprintf("p50 %s, p90 %s, max %s", ratio(div(p50, iv)), ratio(div(p90, iv)), ratio(sh.get(b, "max-x-interval"))))
	}
	if sh, ok := sheets[secStart]; ok {
		const b = "BenchmarkStartToUnlocked"
		sec.Table.add("start to UNLOCKED, stored key (p50 of "+strings.TrimSuffix(s.StartRuns, "x")+" starts)",
			duration(sh.get(b, "unlocked-p50-ms")*1e6),
			"start to socket served: "+duration(sh.get(b, "socket-p50-ms")*1e6),
			ratio(sh.get(b, "unlocked-x-socket")))
	}
	loaded, hasLoaded := sheets[secLoadedRSS]
	if sh, ok := sheets[secIdleRSS]; ok {
		idle := sh.get("BenchmarkIdleRSS", "RSS-MiB")
		base, baseRatio := "—", ratio(1)
		if hasLoaded {
			li := loaded.get("BenchmarkLoadedRSS", "idle-MiB")
			base, baseRatio = "the LoadedRSS process before its load: "+mib(li), ratio(div(idle, li))
		}
		sec.Table.add("idle RSS, unlocked, 3 s of polls every second (IdleRSS)", mib(idle), base, baseRatio)
	}
	if hasLoaded {
		const b = "BenchmarkLoadedRSS"
		sec.Table.add("RSS under 64 `GetDataKey` clients for 10 s (peak)", mib(loaded.get(b, "loaded-MiB")),
			"idle RSS of the same process: "+mib(loaded.get(b, "idle-MiB")), ratio(loaded.get(b, "loaded-x-idle")))
	}
	if len(sec.Table.Rows) == 0 {
		return nil
	}
	return sec
}

// kpRequests returns the section and the requests per node per hour at
// default settings, the fleet's baseline.
func kpRequests(sh sheet, s Settings) (*Section, float64) {
	const b = "BenchmarkKeyProtectRequestsPerHour"
	fast, def := sh.get(b, "fast-req/h"), sh.get(b, "default-req/h")
	sec := &Section{Command: sh.command,
		Table: Table{Head: []string{"run", "requests per node per hour", "per second", "ratio"}}}
	sec.Table.add("fast clock (poll 1 s, proof 10 s), counted over 30 s (baseline)", count(fast), num(fast/3600), ratio(1))
	sec.Table.add("**scaled to the defaults** (poll 15 s, proof 10 min, IAM token 1 h)", "**"+count(def)+"**", num(def/3600),
		ratio(sh.get(b, "default-x-fast")))
	n := float64(s.FleetNodes)
	sec.Note = fmt.Sprintf("at this rate a fleet of %s nodes makes about %s requests/s", count(n), num(n*def/3600))
	return sec, def
}

// fleet renders BenchmarkFleet: one table per run, its sub-benchmarks
// limit=none and limit=N. Key Protect load is set against the single node of
// the same make bench run and the rate limit, detection and recovery against
// the poll interval, the start and recovery of a rate-limited run against
// the run with no limit, 429 answers per node.
func fleet(sh sheet, oneNode float64) []Section {
	const bench = "BenchmarkFleet"
	free := bench + "/limit=none" // the run with no rate limit, the others' baseline
	runs := sh.subs(bench)
	if !slices.Contains(runs, free) {
		sh.get(free, "nodes") // records what is missing
		return nil
	}
	var secs []Section
	for _, name := range runs {
		get := func(unit string) float64 { return sh.get(name, unit) }
		nodes, limit, iv := get("nodes"), get("kp-limit-req/s"), get("interval-ms")
		perNode := func(n float64) string { return num(div(n, nodes)) + " per node" }
		limitText := "no rate limit"
		if limit > 0 {
			limitText = "a rate limit of " + num(limit) + " requests/s per instance"
		}
		sec := Section{Command: sh.command, Title: strings.TrimPrefix(strings.TrimPrefix(name, bench), "/"),
			Note:  fmt.Sprintf("%s nodes against one kpemu with %s, poll interval %s", count(nodes), limitText, duration(iv*1e6)),
			Table: Table{Head: []string{"measure", "value", "baseline (same run)", "ratio"}}}
		sec.Table.add("Key Protect requests per node per hour, steady, default settings", count(get("req/node/h")),
			"one node at defaults (above): "+count(oneNode), ratio(div(get("req/node/h"), oneNode)))
		if limit > 0 {
			sec.Table.add("Key Protect requests/s of the whole fleet, steady", num(get("steady-req/s")),
				"the emulator's rate limit: "+num(limit)+"/s", ratio(div(get("steady-req/s"), limit)))
		} else {
			want := nodes * oneNode / 3600
			sec.Table.add("Key Protect requests/s of the whole fleet, steady", num(get("steady-req/s")),
				"nodes × one node at defaults: "+num(want)+"/s", ratio(div(get("steady-req/s"), want)))
		}
		sec.Table.add("Key Protect requests in the busiest second of the steady window", num(get("steady-peak-req/s")),
			"the window's mean: "+num(get("steady-req/s"))+"/s", ratio(div(get("steady-peak-req/s"), get("steady-req/s"))))
		sec.Table.add("429 answers in the steady window", count(get("steady-429s")), count(nodes)+" nodes", perNode(get("steady-429s")))
		start, unlock := get("start-all-unlocked-s"), get("unlock-all-s")
		startBase, startRatio := "", ""
		unlockBase, unlockRatio := "poll interval "+duration(iv*1e6), ratio(div(unlock*1e3, iv))
		if name == free {
			startBase, startRatio = "none: this run is the baseline of the rate-limited one", ratio(1)
		} else {
			fs, fu := sh.get(free, "start-all-unlocked-s"), sh.get(free, "unlock-all-s")
			startBase, startRatio = "the same with no rate limit: "+duration(fs*1e9), ratio(div(start, fs))
			unlockBase = "the same with no rate limit: " + duration(fu*1e9)
			unlockRatio = ratio(div(unlock, fu)) + "; " + ratio(div(unlock*1e3, iv)) + " the poll interval"
		}
		sec.Table.add("all nodes started at once, provisioning, until all UNLOCKED", duration(start*1e9), startBase, startRatio)
		sec.Table.add("429 answers during the start", count(get("start-429s")), count(nodes)+" nodes", perNode(get("start-429s")))
		p50, p90, mx := get("detect-p50-ms"), get("detect-p90-ms"), get("detect-max-ms")
		sec.Table.add("root key disabled: time to LOCKED across the nodes",
			fmt.Sprintf("p50 %s, p90 %s, max %s", duration(p50*1e6), duration(p90*1e6), duration(mx*1e6)),
			"poll interval "+duration(iv*1e6),
			fmt.Sprintf("p50 %s, p90 %s, max %s", ratio(div(p50, iv)), ratio(div(p90, iv)), ratio(get("detect-max-x-interval"))))
		sec.Table.add("root key enabled again: time until all nodes UNLOCKED", duration(unlock*1e9), unlockBase, unlockRatio)
		sec.Table.add("429 answers during the recovery", count(get("recover-429s")), count(nodes)+" nodes", perNode(get("recover-429s")))
		secs = append(secs, sec)
	}
	return secs
}

// render executes the report template.
func render(r Report) ([]byte, error) {
	funcs := template.FuncMap{"count": func(n int) string { return count(float64(n)) }}
	t, err := template.New("report").Funcs(funcs).Option("missingkey=error").Parse(reportTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, r); err != nil {
		return nil, fmt.Errorf("render template: %w", err)
	}
	return buf.Bytes(), nil
}
