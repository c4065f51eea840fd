// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package secmem

// MappingFlags returns ErrNotSupported outside Linux.
func MappingFlags(uintptr) ([]string, int, error) { return nil, 0, ErrNotSupported }
