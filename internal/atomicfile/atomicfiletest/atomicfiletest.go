// SPDX-License-Identifier: Apache-2.0

//go:build unix

// Package atomicfiletest makes each step of an atomic write fail, for the
// tests of atomicfile and of the packages that write through it.
package atomicfiletest

import (
	"errors"
	"io"
	"os"

	"github.com/byokd/byokd/internal/atomicfile"
)

// ErrInjected is the error an injected failure returns.
var ErrInjected = errors.New("injected failure")

// Failure makes one step of a write fail when its fail func says so; Want
// is the error the write must then report.
type Failure struct {
	Step   string
	Want   error
	Inject func(s *atomicfile.Steps, fail func() bool)
}

// Failures fail every step of atomicfile.Steps, the write in three ways.
// TestFailuresCoverEveryStep in atomicfile keeps it complete.
var Failures = []Failure{
	{"write", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Write
		s.Write = func(file *os.File, b []byte) (int, error) {
			if fail() {
				return 0, ErrInjected
			}
			return next(file, b)
		}
	}},
	{"write of half, with an error", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Write
		s.Write = func(file *os.File, b []byte) (int, error) {
			if fail() {
				n, _ := next(file, b[:len(b)/2])
				return n, ErrInjected
			}
			return next(file, b)
		}
	}},
	{"write of half, without an error", io.ErrShortWrite, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Write
		s.Write = func(file *os.File, b []byte) (int, error) {
			if fail() {
				return next(file, b[:len(b)/2])
			}
			return next(file, b)
		}
	}},
	{"fsync", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Sync
		s.Sync = func(file *os.File) error {
			if fail() {
				return ErrInjected
			}
			return next(file)
		}
	}},
	{"close", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Close
		s.Close = func(file *os.File) error {
			if fail() {
				file.Close()
				return ErrInjected
			}
			return next(file)
		}
	}},
	{"rename", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Rename
		s.Rename = func(dirfd int, from, to string) error {
			if fail() {
				return ErrInjected
			}
			return next(dirfd, from, to)
		}
	}},
	{"link", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.Link
		s.Link = func(dirfd int, from, to string) error {
			if fail() {
				return ErrInjected
			}
			return next(dirfd, from, to)
		}
	}},
	{"folder fsync", ErrInjected, func(s *atomicfile.Steps, fail func() bool) {
		next := s.SyncDir
		s.SyncDir = func(d *os.File) error {
			if fail() {
				return ErrInjected
			}
			return next(d)
		}
	}},
}

// OnCall returns a fail func that is true on the nth call only.
func OnCall(n int) func() bool {
	calls := 0
	return func() bool { calls++; return calls == n }
}
