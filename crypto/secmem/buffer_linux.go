// SPDX-License-Identifier: Apache-2.0

//go:build linux

package secmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// mapMlocked maps size bytes (rounded up to whole pages) of anonymous private
// memory, locks it and marks it don't-dump and wipe-on-fork. A separate
// mapping, rather than a heap slice, is what makes these per-page properties
// possible, and keeps the garbage collector from copying the secret around.
func mapMlocked(size int) (mem []byte, wipeOnFork bool, err error) {
	page := unix.Getpagesize()
	length := (size + page - 1) / page * page
	mem, err = unix.Mmap(-1, 0, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, false, fmt.Errorf("mmap: %w", err)
	}
	// From here on every failure must unmap, or the pages leak.
	if err := unix.Mlock(mem); err != nil {
		_ = unix.Munmap(mem)
		return nil, false, mlockError(length, err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		_ = unix.Munlock(mem)
		_ = unix.Munmap(mem)
		return nil, false, fmt.Errorf("madvise MADV_DONTDUMP: %w", err)
	}
	// MADV_WIPEONFORK came with Linux 4.14; older kernels answer EINVAL. The
	// memory is still locked and not dumped, so carry on and let the caller
	// see it through Buffer.WipeOnFork.
	wipeOnFork = true
	if err := unix.Madvise(mem, unix.MADV_WIPEONFORK); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			_ = unix.Munlock(mem)
			_ = unix.Munmap(mem)
			return nil, false, fmt.Errorf("madvise MADV_WIPEONFORK: %w", err)
		}
		wipeOnFork = false
	}
	return mem, wipeOnFork, nil
}

// mlockError explains an mlock failure. EPERM and ENOMEM from mlock almost
// always mean RLIMIT_MEMLOCK (without CAP_IPC_LOCK), so the error names the
// limit and its current value, which is what an operator has to raise
// (LimitMEMLOCK= in the systemd unit).
func mlockError(length int, err error) error {
	limit := "unknown"
	var rl unix.Rlimit
	if gerr := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); gerr == nil {
		if rl.Cur == unix.RLIM_INFINITY {
			limit = "unlimited"
		} else {
			limit = fmt.Sprintf("%d bytes", rl.Cur)
		}
	}
	return fmt.Errorf("mlock %d bytes (RLIMIT_MEMLOCK is %s; raise it or grant CAP_IPC_LOCK): %w", length, limit, err)
}

func unmap(mem []byte) {
	// Errors here could only mean mem is not our mapping, which the
	// Buffer's own bookkeeping rules out; there is nothing useful to report.
	_ = unix.Munlock(mem)
	_ = unix.Munmap(mem)
}
