// SPDX-License-Identifier: Apache-2.0

//go:build !s390x

// This test compiles and runs a C program with the host C compiler, so it
// is left out of s390x builds: under qemu-s390x a test binary cannot count on
// the host compiler, and a native s390x build would need the header
// installed in a different place. The Go side is checked on s390x by
// TestGoLayoutMatchesGolden against the golden file this test proves.

package cpacf

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite "+goldenPath+" from the installed header")

// s390xInclude is where Debian's linux-libc-dev-s390x-cross puts the s390x
// kernel uapi headers.
const s390xInclude = "/usr/s390x-linux-gnu/include"

// headerProgram prints what the s390x uapi header says about the pkey
// ioctls: sizes, offsets, constants and ioctl numbers. Only the kernel
// headers (asm, asm-generic, linux) come from the s390x tree; libc is the
// host's. __s390x__ makes the uapi headers take their 64-bit s390 paths.
// Pointers are 8 bytes on the host too (the program checks), so sizes and
// offsets are those of s390x; byte order does not change them.
const headerProgram = `#include <stddef.h>
#include <stdio.h>
#include <asm/pkey.h>

_Static_assert(sizeof(void *) == 8, "the host must be 64-bit, like s390x");

#define SIZE(s) printf("sizeof(struct %s) %zu\n", #s, sizeof(struct s))
#define OFF(s, f) printf("offsetof(struct %s, %s) %zu\n", #s, #f, offsetof(struct s, f))
#define NUM(n) printf("%s %d\n", #n, (int)(n))
#define IOCTL(n) printf("%s %#x\n", #n, (unsigned int)(n))

int main(void) {
	NUM(PKEY_IOCTL_MAGIC);
	NUM(MAXCLRKEYSIZE);
	NUM(MAXPROTKEYSIZE);
	NUM(PKEY_KEYTYPE_AES_256);
#ifdef PKEY_KEYTYPE_HMAC_512
	NUM(PKEY_KEYTYPE_HMAC_512);
#else
	puts("PKEY_KEYTYPE_HMAC_512 absent");
#endif
#ifdef PKEY_KEYTYPE_HMAC_1024
	NUM(PKEY_KEYTYPE_HMAC_1024);
#else
	puts("PKEY_KEYTYPE_HMAC_1024 absent");
#endif
	SIZE(pkey_clrkey);
	SIZE(pkey_protkey);
	SIZE(pkey_clr2protk);
	SIZE(pkey_genprotk);
	SIZE(pkey_verifyprotk);
	SIZE(pkey_kblob2pkey);
	SIZE(pkey_kblob2pkey3);
	OFF(pkey_kblob2pkey3, key);
	OFF(pkey_kblob2pkey3, keylen);
	OFF(pkey_kblob2pkey3, apqns);
	OFF(pkey_kblob2pkey3, apqn_entries);
	OFF(pkey_kblob2pkey3, pkeytype);
	OFF(pkey_kblob2pkey3, pkeylen);
	OFF(pkey_kblob2pkey3, pkey);
	IOCTL(PKEY_CLR2PROTK);
	IOCTL(PKEY_GENPROTK);
	IOCTL(PKEY_VERIFYPROTK);
	IOCTL(PKEY_KBLOB2PROTK);
	IOCTL(PKEY_KBLOB2PROTK3);
	return 0;
}
`

const goldenHeader = "# What " + s390xInclude + "/asm/pkey.h says, printed by the C program in\n" +
	"# header_test.go. Regenerate on amd64: go test -run TestHeaderMatchesGolden -update\n"

// TestHeaderMatchesGolden fails, rather than skips, when the header or the
// C compiler is missing: CI must install linux-libc-dev-s390x-cross and gcc.
func TestHeaderMatchesGolden(t *testing.T) {
	header := filepath.Join(s390xInclude, "asm", "pkey.h")
	if _, err := os.Stat(header); err != nil {
		t.Fatalf("s390x uapi header: %v (apt-get install linux-libc-dev-s390x-cross)", err)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("host C compiler: %v (apt-get install gcc)", err)
	}

	dir := t.TempDir()
	inc := filepath.Join(dir, "include")
	if err := os.Mkdir(inc, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"asm", "asm-generic", "linux"} {
		if err := os.Symlink(filepath.Join(s390xInclude, sub), filepath.Join(inc, sub)); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(dir, "pkey.c")
	if err := os.WriteFile(src, []byte(headerProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pkey")
	build := exec.Command(cc, "-std=c11", "-Wall", "-Werror", "-D__s390x__", "-I", inc, "-o", bin, src)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	got := append([]byte(goldenHeader), out...)

	if *update {
		if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", goldenPath)
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the installed header; if the header changed, review and run with -update.\nheader:\n%s\ngolden:\n%s", goldenPath, got, want)
	}
	t.Logf("header facts:\n%s", out)
}
