// SPDX-License-Identifier: Apache-2.0

package atomicfile

// TempPrefix is how the temporary names of name's writes begin.
func TempPrefix(name string) string { return "." + name + ".tmp-" }
