// SPDX-License-Identifier: Apache-2.0

package cpacf

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// goldenPath holds what the installed s390x uapi header says, as the C
// program in header_test.go prints it. TestHeaderMatchesGolden (not built on
// s390x, where the host C compiler is not at hand under qemu) proves the file
// equals the header; TestGoLayoutMatchesGolden, built everywhere, compares
// the Go side with it, so under qemu-s390x the real s390x Go layout is
// checked against the header too.
const goldenPath = "testdata/pkey_h.golden"

func readGolden(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	golden := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("%s: bad line %q", goldenPath, line)
		}
		golden[line[:i]] = line[i+1:]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return golden
}

func hexNum(v uintptr) string { return fmt.Sprintf("%#x", v) }

// ioc is _IOC of asm-generic/ioctl.h.
func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// goLayout is the Go side of every golden entry the code relies on.
func goLayout() map[string]string {
	var r kblob2pkey3
	d := func(v uintptr) string { return strconv.FormatUint(uint64(v), 10) }
	return map[string]string{
		"PKEY_IOCTL_MAGIC":      d(pkeyIoctlMagic),
		"PKEY_KEYTYPE_HMAC_512": d(keyTypeHMAC512),
		"PKEY_KBLOB2PROTK3":     hexNum(kblob2protk3),

		"sizeof(struct pkey_kblob2pkey3)":                 d(unsafe.Sizeof(r)),
		"offsetof(struct pkey_kblob2pkey3, key)":          d(unsafe.Offsetof(r.key)),
		"offsetof(struct pkey_kblob2pkey3, keylen)":       d(unsafe.Offsetof(r.keylen)),
		"offsetof(struct pkey_kblob2pkey3, apqns)":        d(unsafe.Offsetof(r.apqns)),
		"offsetof(struct pkey_kblob2pkey3, apqn_entries)": d(unsafe.Offsetof(r.apqnEntries)),
		"offsetof(struct pkey_kblob2pkey3, pkeytype)":     d(unsafe.Offsetof(r.pkeytype)),
		"offsetof(struct pkey_kblob2pkey3, pkeylen)":      d(unsafe.Offsetof(r.pkeylen)),
		"offsetof(struct pkey_kblob2pkey3, pkey)":         d(unsafe.Offsetof(r.pkey)),
	}
}

func TestGoLayoutMatchesGolden(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the pkey structs are compared for 64-bit targets; s390x is one")
	}
	golden := readGolden(t)
	for name, got := range goLayout() {
		want, ok := golden[name]
		switch {
		case !ok:
			t.Errorf("%s: not in %s; regenerate it (go test -run TestHeaderMatchesGolden -update on amd64)", name, goldenPath)
		case want == "absent":
			t.Logf("%s: not in the installed header; Go uses the upstream value %s", name, got)
		case got != want:
			t.Errorf("%s: Go has %s, the header %s", name, got, want)
		}
	}
}

func TestIoctlEncodingMatchesHeaderForEveryPkeyIoctlInGolden(t *testing.T) {
	// The ioctl numbers earlier notes computed for the 6.1 header, and
	// the one this package uses; each is recomputed from the struct size
	// the header gives, with the asm-generic encoding.
	golden := readGolden(t)
	for _, tt := range []struct {
		name, size string
		dir, nr    uintptr
		notes      uintptr
	}{
		{"PKEY_CLR2PROTK", "sizeof(struct pkey_clr2protk)", iocRead | iocWrite, 0x04, 0xc06c7004},
		{"PKEY_GENPROTK", "sizeof(struct pkey_genprotk)", iocRead | iocWrite, 0x08, 0xc04c7008},
		{"PKEY_VERIFYPROTK", "sizeof(struct pkey_verifyprotk)", iocWrite, 0x09, 0x40487009},
		{"PKEY_KBLOB2PROTK", "sizeof(struct pkey_kblob2pkey)", iocRead | iocWrite, 0x0a, 0xc058700a},
		{"PKEY_KBLOB2PROTK3", "sizeof(struct pkey_kblob2pkey3)", iocRead | iocWrite, 0x1d, 0xc030701d},
	} {
		size, err := strconv.ParseUint(golden[tt.size], 10, 32)
		if err != nil {
			t.Fatalf("%s: %v", tt.size, err)
		}
		got := ioc(tt.dir, pkeyIoctlMagic, tt.nr, uintptr(size))
		if want := golden[tt.name]; hexNum(got) != want {
			t.Errorf("%s: encoding gives %s, the header %s", tt.name, hexNum(got), want)
		}
		if got != tt.notes {
			t.Errorf("%s: %s, the notes say %#x", tt.name, hexNum(got), tt.notes)
		}
	}
}

func TestHMACKeyDoesNotFitTheAESOnlyIoctls(t *testing.T) {
	// Why PKEY_CLR2PROTK and PKEY_VERIFYPROTK are not used: their structs
	// cannot hold an HMAC-SHA-256 key or its protected key.
	golden := readGolden(t)
	maxClr, _ := strconv.Atoi(golden["MAXCLRKEYSIZE"])
	maxProt, _ := strconv.Atoi(golden["MAXPROTKEYSIZE"])
	if maxClr == 0 || maxProt == 0 {
		t.Fatalf("MAXCLRKEYSIZE %q, MAXPROTKEYSIZE %q in %s", golden["MAXCLRKEYSIZE"], golden["MAXPROTKEYSIZE"], goldenPath)
	}
	if hmacBlockSize <= maxClr || protKeySize <= maxProt {
		t.Fatalf("an HMAC key (%d bytes, protected %d) fits struct pkey_clrkey (%d) and pkey_protkey (%d): reconsider PKEY_CLR2PROTK",
			hmacBlockSize, protKeySize, maxClr, maxProt)
	}
}

func TestKBlob2Protk3IsTheHeadersNumberOnThisTarget(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("64-bit targets only")
	}
	if kblob2protk3 != 0xc030701d {
		t.Fatalf("PKEY_KBLOB2PROTK3 = %#x, want 0xc030701d", kblob2protk3)
	}
}
