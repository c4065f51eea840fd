// SPDX-License-Identifier: Apache-2.0

// Package secmem keeps key material in locked, non-dumpable memory and wipes it when done.
package secmem

import "errors"

// ErrNotSupported is returned on platforms where locked, non-dumpable
// memory cannot be set up; callers then choose another sealer backend
// instead of keeping keys in ordinary heap memory.
var ErrNotSupported = errors.New("protected memory is not supported on this platform")
