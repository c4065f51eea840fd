// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

// EachRegion reads every readable mapping of pid (as root, through
// /proc/PID/mem; pid may be the test's own) and hands it to f. Mappings
// larger than max bytes (0: no limit) are left out: the race detector's
// shadow memory is terabytes of reserved address space.
func EachRegion(t testing.TB, pid int, f func(r Region, buf []byte), max uint64) {
	t.Helper()
	regions, err := memoryRegions(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, r := range regions {
		if max > 0 && r.End-r.Start > max {
			continue
		}
		buf := make([]byte, r.End-r.Start)
		n, _ := mem.ReadAt(buf, int64(r.Start))
		f(r, buf[:n])
	}
}

// Region is one mapping of a process.
type Region struct {
	Start, End uint64
	Name       string
	Mlocked    bool // the kernel holds it in memory (mlock: VmFlags lo)
}

// memoryRegions lists the readable mappings of pid from /proc/PID/smaps,
// with whether the kernel holds them locked (VmFlags lo).
func memoryRegions(pid int) ([]Region, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Region
	var cur *Region
	readable := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4 {
			if cur != nil && readable {
				out = append(out, *cur)
			}
			lo, hi, _ := strings.Cut(fields[0], "-")
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("smaps line %q", line)
			}
			name := "anonymous"
			if len(fields) >= 6 {
				name = fields[5]
			}
			cur = &Region{Start: s, End: e, Name: name}
			readable = fields[1][0] == 'r' && name != "[vvar]" && name != "[vsyscall]" && name != "[vvar_vclock]"
			continue
		}
		if cur != nil && strings.HasPrefix(line, "VmFlags:") {
			for _, fl := range fields[1:] {
				cur.Mlocked = cur.Mlocked || fl == "lo"
			}
		}
	}
	if cur != nil && readable {
		out = append(out, *cur)
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return nil, err
	}
	return out, nil
}
