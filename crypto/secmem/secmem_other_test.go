// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package secmem

import (
	"errors"
	"testing"
)

func TestProtectedMemoryIsNotSupportedOffLinux(t *testing.T) {
	if _, err := New(32); !errors.Is(err, ErrNotSupported) {
		t.Errorf("New: error %v, want ErrNotSupported", err)
	}
	if err := SetNonDumpable(); !errors.Is(err, ErrNotSupported) {
		t.Errorf("SetNonDumpable: error %v, want ErrNotSupported", err)
	}
	if _, err := Dumpable(); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Dumpable: error %v, want ErrNotSupported", err)
	}
	if _, _, err := MappingFlags(0); !errors.Is(err, ErrNotSupported) {
		t.Errorf("MappingFlags: error %v, want ErrNotSupported", err)
	}
}
