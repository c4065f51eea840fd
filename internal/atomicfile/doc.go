// SPDX-License-Identifier: Apache-2.0

// Package atomicfile puts files in place so that a crash or a failure at any
// point leaves either the old file or the new one, whole: never a mix, a
// torn file or nothing. It is the one way byokd writes a file that must not
// be torn, and places its socket.
//
// A file is written under a temporary name in the same folder, TempPrefix
// of its name and 8 random hex digits, created O_EXCL|O_NOFOLLOW and set to
// exactly the mode asked (the umask aside) before anything is written in
// it; the data is written, fsynced and the file closed; then it is renamed
// over the name (Write) or linked to it, which fails if anything has the
// name (Create); then the folder is fsynced. Until the rename or link every
// failure removes the temporary file and leaves the name untouched.
package atomicfile
