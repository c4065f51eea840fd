// SPDX-License-Identifier: Apache-2.0

// Package version is the release version of byokd's binaries and of the
// WiredTiger plugin. It is a leaf: it imports nothing, so that a binary can
// print its version without linking anything else.
//
// The linker sets it:
//
//	go build -ldflags "-X github.com/byokd/byokd/version.Version=1.4.0" ./cmd/byokd
//
// scripts/package does so with the version from git (scripts/version).
package version

// Version is "dev" in a build the linker did not stamp.
var Version = "dev"
