// SPDX-License-Identifier: Apache-2.0

//go:build linux

package secmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MappingFlags reads /proc/self/smaps and returns, for the mapping that
// contains addr, its VmFlags (for example "lo" locked, "dd" don't dump,
// "wf" wipe on fork) and its Locked size in kB. It lets tests and health
// checks see what the kernel actually applied rather than trust the
// syscalls' return values.
func MappingFlags(addr uintptr) (flags []string, lockedKB int, err error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, 0, fmt.Errorf("mapping flags: %w", err)
	}
	defer f.Close()
	flags, lockedKB, found, err := parseSmaps(bufio.NewScanner(f), addr)
	if err != nil {
		return nil, 0, fmt.Errorf("mapping flags: read /proc/self/smaps: %w", err)
	}
	if !found {
		return nil, 0, fmt.Errorf("mapping flags: no mapping contains %#x", addr)
	}
	return flags, lockedKB, nil
}

// parseSmaps is split out so the parser can be tested on fixed input.
func parseSmaps(sc *bufio.Scanner, addr uintptr) (flags []string, lockedKB int, found bool, err error) {
	in := false
	for sc.Scan() {
		line := sc.Text()
		key, rest, _ := strings.Cut(line, " ")
		if !strings.HasSuffix(key, ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			if in {
				// The mapping we wanted had no VmFlags line (kernels
				// before 3.8); report what was found.
				return flags, lockedKB, true, nil
			}
			in = contains(key, addr)
			continue
		}
		if !in {
			continue
		}
		switch key {
		case "Locked:":
			n, perr := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if perr != nil {
				return nil, 0, false, fmt.Errorf("parse Locked line %q: %w", line, perr)
			}
			lockedKB = n
		case "VmFlags:":
			// VmFlags is the last line of each mapping's block.
			return strings.Fields(rest), lockedKB, true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, 0, false, err
	}
	return flags, lockedKB, in, nil
}

// contains reports whether the range "start-end" (hex, end exclusive)
// holds addr. Anything that does not parse is not a match.
func contains(rng string, addr uintptr) bool {
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	a := uint64(addr)
	return start <= a && a < end
}
