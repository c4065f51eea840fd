// SPDX-License-Identifier: Apache-2.0

//go:build linux

package secmem

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// childEnv selects, in a re-executed test binary, the check that changes
// process-wide state and so must not run in the test process itself.
const childEnv = "BYOKD_SECMEM_CHILD"

// childDone is printed by a child that reached the end of its check, so the
// parent can tell it apart from a child that ran no test at all.
const childDone = "secmem child check done"

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func newBuffer(t *testing.T, size int) *Buffer {
	t.Helper()
	b, err := New(size)
	if err != nil {
		t.Fatalf("New(%d): %v", size, err)
	}
	t.Cleanup(b.Destroy)
	return b
}

func TestBufferRoundTripsSecret(t *testing.T) {
	for _, size := range []int{1, 32, 4096, 5000} {
		b := newBuffer(t, size)
		got := b.Bytes()
		if len(got) != size || cap(got) != size || b.Len() != size {
			t.Fatalf("size %d: len %d cap %d Len %d", size, len(got), cap(got), b.Len())
		}
		if !bytes.Equal(got, make([]byte, size)) {
			t.Fatalf("size %d: new buffer is not zeroed", size)
		}
		want := make([]byte, size)
		rand.Read(want)
		copy(got, want)
		if !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("size %d: Bytes does not return what was written", size)
		}
	}
}

func TestNewRejectsNonPositiveSize(t *testing.T) {
	for _, size := range []int{0, -1} {
		if b, err := New(size); err == nil {
			b.Destroy()
			t.Errorf("New(%d) succeeded", size)
		}
	}
}

func TestBufferWipeZeroesSecret(t *testing.T) {
	b := newBuffer(t, 64)
	rand.Read(b.Bytes())
	if bytes.Equal(b.Bytes(), make([]byte, 64)) {
		t.Fatal("random fill left the buffer zero")
	}
	b.Wipe()
	if !bytes.Equal(b.Bytes(), make([]byte, 64)) {
		t.Fatal("buffer not zero after Wipe")
	}
}

func TestBufferDestroyIsIdempotentAndSafeAfterWipe(t *testing.T) {
	b, err := New(32)
	if err != nil {
		t.Fatal(err)
	}
	rand.Read(b.Bytes())
	b.Wipe()
	b.Destroy()
	b.Destroy()
	b.Wipe() // must not touch the unmapped pages
	if b.Bytes() != nil {
		t.Fatal("Bytes after Destroy is not nil")
	}
}

func TestBufferMappingIsLockedAndNotDumped(t *testing.T) {
	page := os.Getpagesize()
	for _, size := range []int{1, 32, page, page + 1} {
		b := newBuffer(t, size)
		flags, lockedKB, err := MappingFlags(addr(b.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		// The kernel may merge our mapping with a neighbour that has the
		// same flags, so Locked can be larger than ours, never smaller.
		if want := (size + page - 1) / page * page / 1024; lockedKB < want {
			t.Errorf("size %d: Locked %d kB, want at least %d kB", size, lockedKB, want)
		}
		for _, f := range []string{"lo", "dd"} {
			if !slices.Contains(flags, f) {
				t.Errorf("size %d: VmFlags %v lack %q", size, flags, f)
			}
		}
		// WipeOnFork must tell the truth either way, since the daemon
		// warns on it.
		if got := slices.Contains(flags, "wf"); got != b.WipeOnFork() {
			t.Errorf("size %d: VmFlags %v, but WipeOnFork() = %v", size, flags, b.WipeOnFork())
		}
	}
}

func TestDestroyReleasesTheLockedMapping(t *testing.T) {
	b, err := New(32)
	if err != nil {
		t.Fatal(err)
	}
	a := addr(b.Bytes())
	b.Destroy()
	flags, _, err := MappingFlags(a)
	if err == nil && slices.Contains(flags, "dd") {
		t.Fatalf("address still in a don't-dump mapping after Destroy: %v", flags)
	}
}

func TestWipeZeroesEverySliceLength(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 4097} {
		b := make([]byte, n)
		rand.Read(b)
		Wipe(b)
		if !bytes.Equal(b, make([]byte, n)) {
			t.Errorf("len %d: not zero after Wipe", n)
		}
	}
	Wipe(nil) // must not panic
}

func TestParseSmapsFindsTheMappingHoldingTheAddress(t *testing.T) {
	const smaps = `55d0a0000000-55d0a0001000 r--p 00000000 08:01 123   /usr/bin/x y
Size:                  4 kB
Locked:                0 kB
VmFlags: rd mr mw me
7f0000000000-7f0000002000 rw-p 00000000 00:00 0
Size:                  8 kB
Locked:                8 kB
VmFlags: rd wr mr mw me lo ac dd wf
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
Size:                  4 kB
Locked:                4 kB
7f0000005000-7f0000006000 rw-p 00000000 00:00 0
Locked:                0 kB
VmFlags: rd wr
`
	tests := []struct {
		name   string
		addr   uintptr
		found  bool
		locked int
		flags  []string
	}{
		{"first mapping, path with space", 0x55d0a0000800, true, 0, []string{"rd", "mr", "mw", "me"}},
		{"start of range", 0x7f0000000000, true, 8, []string{"rd", "wr", "mr", "mw", "me", "lo", "ac", "dd", "wf"}},
		{"last byte of range", 0x7f0000001fff, true, 8, []string{"rd", "wr", "mr", "mw", "me", "lo", "ac", "dd", "wf"}},
		{"end is exclusive", 0x7f0000002000, false, 0, nil},
		{"mapping without VmFlags", 0x7f0000003010, true, 4, nil},
		{"last mapping", 0x7f0000005000, true, 0, []string{"rd", "wr"}},
		{"unmapped", 0x1000, false, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, locked, found, err := parseSmaps(bufio.NewScanner(strings.NewReader(smaps)), tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.found || locked != tt.locked || !slices.Equal(flags, tt.flags) {
				t.Fatalf("got found=%v locked=%d flags=%v, want found=%v locked=%d flags=%v",
					found, locked, flags, tt.found, tt.locked, tt.flags)
			}
		})
	}
}

// runChild re-executes this test binary to run only the named test, with
// childEnv set to mode, and fails unless the child completed its check.
func runChild(t *testing.T, mode string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), childDone) {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
}

func TestSetNonDumpableMakesProcessNotDumpable(t *testing.T) {
	if os.Getenv(childEnv) != "nondumpable" {
		// Being non-dumpable is process-wide and cannot be undone safely,
		// so it is checked in a child process.
		runChild(t, "nondumpable")
		return
	}
	if d, err := Dumpable(); err != nil || !d {
		t.Fatalf("before: Dumpable() = %v, %v; want true (test binary started dumpable)", d, err)
	}
	if err := SetNonDumpable(); err != nil {
		t.Fatal(err)
	}
	if d, err := Dumpable(); err != nil || d {
		t.Fatalf("after: Dumpable() = %v, %v; want false", d, err)
	}
	t.Log(childDone)
}

func TestNewFailsNamingRLIMIT_MEMLOCKWhenLockIsRefused(t *testing.T) {
	if os.Getenv(childEnv) != "nomlock" {
		runChild(t, "nomlock")
		return
	}
	// Capabilities are per thread, so drop CAP_IPC_LOCK on the thread that
	// will call mlock and stay on it; as root the limit would not apply.
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	data[unix.CAP_IPC_LOCK/32].Effective &^= 1 << (unix.CAP_IPC_LOCK % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = 0
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		t.Fatal(err)
	}
	b, err := New(32)
	if err == nil {
		b.Destroy()
		t.Fatal("New succeeded with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK")
	}
	t.Logf("New with no way to lock: %v", err)
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOMEM) {
		t.Errorf("error does not wrap EPERM or ENOMEM: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "RLIMIT_MEMLOCK is 0 bytes") {
		t.Errorf("error does not name the limit and its value: %v", err)
	}
	t.Log(childDone)
}
