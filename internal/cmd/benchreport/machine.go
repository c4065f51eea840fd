// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU    string // model name from /proc/cpuinfo
	CPUs   int
	Memory string // MemTotal from /proc/meminfo, in GiB
	Kernel string // uname -srm
	OS     string // PRETTY_NAME from /etc/os-release
	Go     string // go version
	Date   string // UTC
	Commit string // git HEAD, marked when the tree has changes
}

// describe reads the machine's description; what it cannot read it says
// is unknown rather than failing the run. out is the report being written,
// left out of the check for uncommitted changes.
func describe(ctx context.Context, goCmd, out string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	read := func(path string) string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	run := func(name string, args ...string) string {
		b, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	m.CPU = orUnknown(cpuModel(read("/proc/cpuinfo")))
	m.Memory = orUnknown(memTotal(read("/proc/meminfo")))
	m.Kernel = orUnknown(run("uname", "-srm"))
	m.OS = orUnknown(osName(read("/etc/os-release")))
	m.Go = orUnknown(run(goCmd, "version"))
	m.Commit = "unknown"
	if c := run("git", "rev-parse", "--short=12", "HEAD"); c != "" {
		m.Commit = c + treeState(ctx, out)
	}
	return m
}

// treeState says whether the work tree differs from HEAD, the report
// being written aside.
func treeState(ctx context.Context, out string) string {
	args := []string{"status", "--porcelain", "--", "."}
	if abs, err := filepath.Abs(out); err == nil {
		if wd, err := os.Getwd(); err == nil {
			if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
				args = append(args, ":(exclude)"+rel)
			}
		}
	}
	b, err := exec.CommandContext(ctx, "git", args...).Output()
	switch {
	case err != nil:
		return " (work tree state unknown)"
	case len(bytes.TrimSpace(b)) > 0:
		return " with uncommitted changes"
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// cpuModel is the first model name in /proc/cpuinfo (x86, arm64), or the
// machine line of s390x, which has no model name.
func cpuModel(cpuinfo string) string {
	var machine string
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.Join(strings.Fields(v), " ")
		switch {
		case k == "model name" && v != "":
			return v
		case k == "vendor_id" && machine == "" && v != "":
			machine = v
		case strings.HasPrefix(k, "processor 0") && v != "": // s390x: "processor 0: version = …, identification = …, machine = 3931"
			machine += " " + v
		}
	}
	return strings.TrimSpace(machine)
}

// memTotal is MemTotal of /proc/meminfo in GiB: "7.8 GiB".
func memTotal(meminfo string) string {
	for _, line := range strings.Split(meminfo, "\n") {
		v, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return ""
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return ""
		}
		return strconv.FormatFloat(kb/(1<<20), 'f', 1, 64) + " GiB"
	}
	return ""
}

// osName is PRETTY_NAME of os-release, unquoted, else NAME VERSION_ID.
func osName(osRelease string) string {
	vals := map[string]string{}
	for _, line := range strings.Split(osRelease, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, `'"`)
		}
		vals[k] = v
	}
	if v := vals["PRETTY_NAME"]; v != "" {
		return v
	}
	return strings.TrimSpace(vals["NAME"] + " " + vals["VERSION_ID"])
}
