// SPDX-License-Identifier: Apache-2.0

package secmem

import "runtime"

// Wipe overwrites b with zeros.
//
// A plain clear(b) just before b goes out of use is a dead store: the
// compiler may drop it, notably for a local array it can see is never read
// again. Two things keep this one. Wipe is never inlined, so at each call
// site it is an opaque call whose effect on memory the caller's optimizer
// cannot see (Go does no inter-procedural dead-store elimination). And
// runtime.KeepAlive counts as a use of b after the clear, so even inside
// Wipe the stores are not to memory the compiler considers dead.
//
// Wipe cannot reach copies made elsewhere: old stacks left behind when a
// goroutine's stack grew, registers, or heap copies made by other code.
//
//go:noinline
func Wipe(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}
