// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package secmem

// SetNonDumpable returns ErrNotSupported outside Linux.
func SetNonDumpable() error { return ErrNotSupported }

// Dumpable returns ErrNotSupported outside Linux.
func Dumpable() (bool, error) { return false, ErrNotSupported }
