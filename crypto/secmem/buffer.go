// SPDX-License-Identifier: Apache-2.0

package secmem

import "fmt"

// Buffer is a fixed-size secret kept outside the Go heap, in memory that is
// locked against swapping, left out of core dumps and, where the kernel
// allows it, zeroed in a child created by fork.
//
// The memory is not managed by the garbage collector, so a Buffer must be
// released with Destroy. There is deliberately no finalizer: a slice from
// Bytes may outlive the *Buffer it came from, and unmapping under it would
// crash the process.
//
// A Buffer is not safe for concurrent use; callers that share one guard it
// with their own lock.
type Buffer struct {
	mem        []byte // the whole mapping, a multiple of the page size; nil after Destroy
	size       int
	wipeOnFork bool
}

// New returns a zeroed Buffer of size bytes. It fails rather than hand out
// memory that could be swapped: if the memory cannot be locked (typically
// RLIMIT_MEMLOCK is too low) the error says so.
func New(size int) (*Buffer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("new secure buffer: size %d, want more than 0", size)
	}
	mem, wipeOnFork, err := mapMlocked(size)
	if err != nil {
		return nil, fmt.Errorf("new secure buffer of %d bytes: %w", size, err)
	}
	return &Buffer{mem: mem, size: size, wipeOnFork: wipeOnFork}, nil
}

// Bytes returns the secret, len and cap both the size given to New. The
// slice points into the locked mapping: do not append to it (that would copy
// the secret to the heap) and do not use it after Destroy. After Destroy,
// Bytes returns nil.
func (b *Buffer) Bytes() []byte {
	if b.mem == nil {
		return nil
	}
	return b.mem[:b.size:b.size]
}

// Len returns the size given to New.
func (b *Buffer) Len() int { return b.size }

// WipeOnFork reports whether the kernel accepted MADV_WIPEONFORK (Linux 4.14
// and later). When it did not, the Buffer is still locked and left out of
// core dumps, but a fork without exec would copy the secret into the child;
// callers should log a warning.
func (b *Buffer) WipeOnFork() bool { return b.wipeOnFork }

// Wipe zeroes the whole mapping, keeping it for reuse. It is a no-op after
// Destroy.
func (b *Buffer) Wipe() {
	if b.mem != nil {
		Wipe(b.mem)
	}
}

// Destroy wipes the secret, unlocks and unmaps the memory. It is safe to call
// more than once and after Wipe.
func (b *Buffer) Destroy() {
	if b.mem == nil {
		return
	}
	Wipe(b.mem)
	mem := b.mem
	b.mem = nil
	unmap(mem)
}
