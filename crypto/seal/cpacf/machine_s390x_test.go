// SPDX-License-Identifier: Apache-2.0

//go:build linux && s390x

package cpacf

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// These run the assembly and the ioctl wrapper for real. Under
// qemu-s390x only the KMAC query function exists, so they stop short of
// KMAC PHMAC-SHA-256 and of a pkey device; on an IBM Z with /dev/pkey,
// TestNewOnThisMachine covers the rest.

func TestKMACQueryReportsTheQueryFunction(t *testing.T) {
	status := machineKMAC{}.Query()
	t.Logf("KMAC status word %x; PHMAC-SHA-256 (%#x) installed: %v", status, fcPHMACSHA256, installed(status, fcPHMACSHA256))
	// The query function's own bit is always set where KMAC exists.
	if !installed(status, 0) {
		t.Fatalf("KMAC query status %x lacks the query function itself", status)
	}
}

func TestKMACRunReturnsConditionCodeAndLengthLeft(t *testing.T) {
	// Run with function code 0 is the query too: it stores the status word
	// at the parameter block, ignores the message and ends with condition
	// code 0, which exercises the register set-up, the condition code
	// branches and the results of kmacRun without a protected key.
	var p paramBlock
	for i := range p {
		p[i] = 0xee
	}
	msg := []byte("a message the query leaves alone")
	cc, left := machineKMAC{}.Run(0, &p, msg)
	if cc != ccDone || left != len(msg) {
		t.Fatalf("Run(query) = condition code %d, %d bytes left; want 0, %d", cc, left, len(msg))
	}
	if want := (machineKMAC{}).Query(); [16]byte(p[:16]) != want {
		t.Fatalf("Run(query) stored %x, Query %x", p[:16], want)
	}
	if p[16] != 0xee {
		t.Fatal("Run(query) wrote past the 16-byte status word")
	}
}

func TestProtectKeyOnAFileThatIsNotThePkeyDeviceFails(t *testing.T) {
	// The ioctl wrapper against a file that knows no pkey ioctls: the
	// request goes out and the error comes back as an errno: ENOTTY from a
	// kernel, ENOSYS from qemu-s390x 7.2, which forwards only the ioctls in
	// its own table and answers the rest itself.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	d := &pkeyDevice{fd: int(f.Fd())}
	defer f.Close()
	token := make([]byte, tokenSize)
	putClearKeyToken(token, make([]byte, 32))
	out := make([]byte, protKeySize)
	_, _, err = d.ProtectKey(token, out)
	switch {
	case errors.Is(err, syscall.ENOTTY):
		if errnoReason(err) == "" {
			t.Errorf("ENOTTY is not classed as unavailable")
		}
	case errors.Is(err, syscall.ENOSYS):
		t.Logf("ENOSYS: qemu-user does not forward the pkey ioctls")
	default:
		t.Fatalf("PKEY_KBLOB2PROTK3 on %s: %v, want ENOTTY (or ENOSYS under qemu)", os.DevNull, err)
	}
}

func TestOpenPlatformIsAvailableOrSaysWhy(t *testing.T) {
	dev, _, err := openPlatform()
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("openPlatform: %v, want ErrUnavailable", err)
		}
		t.Logf("not available: %v", err)
		return
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenPkeyDeviceIsAvailableOrSaysWhy(t *testing.T) {
	// Under qemu on an x86 host there is no /dev/pkey: ENOENT, reported as
	// ErrUnavailable. On IBM Z with the pkey module it opens.
	d, err := openPkeyDevice(pkeyPath)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("open %s: %v, want ErrUnavailable", pkeyPath, err)
		}
		t.Logf("not available: %v", err)
		return
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
