// SPDX-License-Identifier: Apache-2.0

package keyproviderv1

// Limits of the key provider protocol, shared by byokd and its clients so
// that neither sends what the other cannot take: byokd refuses a larger
// plaintext or additional data, and both ends accept messages of
// MaxMessage bytes.
//
// MaxPlaintext covers the largest block WiredTiger writes under mongod's
// table settings: an overflow value up to leaf_value_max=64MB, with its
// page header.
const (
	MaxPlaintext = 64<<20 + 64<<10
	MaxAAD       = 4 << 10
	MaxMessage   = MaxPlaintext + 1<<20
)
