// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package secmem

func mapMlocked(int) ([]byte, bool, error) { return nil, false, ErrNotSupported }

func unmap([]byte) {}
