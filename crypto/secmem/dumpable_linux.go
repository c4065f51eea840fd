// SPDX-License-Identifier: Apache-2.0

//go:build linux

package secmem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetNonDumpable marks the whole process not dumpable: no core dump is
// written, /proc/<pid>/mem and friends become root-only, and a same-uid
// process can no longer ptrace it. MADV_DONTDUMP protects one mapping; this
// also covers the heap and stacks where transient copies of keys may lie.
// It affects the entire process, so the daemon calls it once at start.
func SetNonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_DUMPABLE: %w", err)
	}
	return nil
}

// Dumpable reports whether the process is dumpable (PR_GET_DUMPABLE gives a
// non-zero value, including 2, "dumpable by root only").
func Dumpable() (bool, error) {
	// unix.Prctl drops the return value, which is the answer here.
	r, _, errno := unix.Syscall6(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE, 0, 0, 0, 0, 0)
	if errno != 0 {
		return false, fmt.Errorf("prctl PR_GET_DUMPABLE: %w", errno)
	}
	return r != 0, nil
}
