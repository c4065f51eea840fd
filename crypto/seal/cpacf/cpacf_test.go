// SPDX-License-Identifier: Apache-2.0

package cpacf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/sealtest"
)

// newSim returns a Sealer on a fresh simulated machine. At cleanup it checks
// that the Sealer never sent a request the kernel or the instruction would
// have refused.
func newSim(t testing.TB) (*Sealer, *machineSim) {
	t.Helper()
	m := newMachineSim()
	s, err := newSealer(m.device(), m.kmac())
	if err != nil {
		t.Fatalf("newSealer: %v", err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		if m.badRequest != "" {
			t.Errorf("the sealer sent a request the machine would refuse: %s", m.badRequest)
		}
	})
	return s, m
}

func newDEK(t testing.TB) []byte {
	t.Helper()
	dek := make([]byte, seal.DEKSize)
	rand.Read(dek)
	return dek
}

func sealCopy(t testing.TB, s seal.Sealer, dek []byte) {
	t.Helper()
	if err := s.Seal(t.Context(), bytes.Clone(dek)); err != nil {
		t.Fatalf("Seal: %v", err)
	}
}

func derive(t testing.TB, s seal.Sealer, info []byte) ([]byte, error) {
	t.Helper()
	out := make([]byte, seal.DEKSize)
	return out, s.Derive(t.Context(), info, out)
}

func TestSimulatedSealerConformsToSealer(t *testing.T) {
	sealtest.Run(t, func(t *testing.T) seal.Sealer {
		s, _ := newSim(t)
		return s
	})
}

func TestDeriveIsBitIdenticalToDatakeyAndMemorySealer(t *testing.T) {
	s, _ := newSim(t)
	mem, err := seal.NewMemory()
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	t.Cleanup(func() { _ = mem.Close() })

	longest, err := datakey.Info(strings.Repeat("c", datakey.MaxClusterIDLen), strings.Repeat("k", datakey.MaxKeyIDLen))
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		dek := newDEK(t)
		sealCopy(t, s, dek)
		sealCopy(t, mem, dek)
		// Lengths around the SHA-256 block boundaries (55, 56, 63, 64
		// bytes of message with the 0x01 appended) and the longest info.
		infos := [][]byte{{}, []byte("byokd/v1/c/k"), longest}
		for _, n := range []int{54, 55, 56, 62, 63, 64, 119, 120, 127, 128} {
			info := make([]byte, n)
			rand.Read(info)
			infos = append(infos, info)
		}
		for _, info := range infos {
			got, err := derive(t, s, info)
			if err != nil {
				t.Fatalf("cpacf Derive(%d-byte info): %v", len(info), err)
			}
			fromMem, err := derive(t, mem, info)
			if err != nil {
				t.Fatalf("memory Derive: %v", err)
			}
			want, err := datakey.Derive(dek, info)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[:]) || !bytes.Equal(got, fromMem) {
				t.Fatalf("%d-byte info: cpacf %x, datakey %x, memory %x", len(info), got, want, fromMem)
			}
		}
	}
}

func TestDeriveMatchesRFC5869TestCase1(t *testing.T) {
	// RFC 5869 A.1 (SHA-256): the first 32 bytes of OKM are T(1).
	s, _ := newSim(t)
	prk, _ := hex.DecodeString("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
	info, _ := hex.DecodeString("f0f1f2f3f4f5f6f7f8f9")
	want, _ := hex.DecodeString("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
	sealCopy(t, s, prk)
	got, err := derive(t, s, info)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Derive = %x, want %x", got, want)
	}
}

func TestWrappingKeyChangeFailsDeriveWithErrResealUntilSealedAgain(t *testing.T) {
	s, m := newSim(t)
	dek := newDEK(t)
	sealCopy(t, s, dek)
	before, err := derive(t, s, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}

	m.ReIPL()
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrReseal) {
		t.Fatalf("Derive after re-IPL: %v, want ErrReseal", err)
	}
	runs := m.runs
	if _, err := derive(t, s, []byte("y")); !errors.Is(err, seal.ErrReseal) {
		t.Fatalf("second Derive after re-IPL: %v, want ErrReseal", err)
	}
	if m.runs != runs {
		t.Errorf("Derive ran the instruction again on a key known to be void")
	}

	// What the daemon does: unwrap again and Seal.
	sealCopy(t, s, dek)
	after, err := derive(t, s, []byte("x"))
	if err != nil {
		t.Fatalf("Derive after Seal again: %v", err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the data key changed across the re-IPL")
	}
}

func TestWipeAfterWrappingKeyChangeGivesErrWiped(t *testing.T) {
	s, m := newSim(t)
	sealCopy(t, s, newDEK(t))
	m.ReIPL()
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrReseal) {
		t.Fatalf("Derive after re-IPL: %v, want ErrReseal", err)
	}
	if err := s.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrWiped) {
		t.Fatalf("Derive after Wipe: %v, want ErrWiped", err)
	}
}

func TestConcurrentDeriveAcrossReIPLAndResealNeverReturnsWrongKey(t *testing.T) {
	s, m := newSim(t)
	dek := newDEK(t)
	sealCopy(t, s, dek)
	info := []byte("byokd/v1/c/k")
	want, err := datakey.Derive(dek, info)
	if err != nil {
		t.Fatal(err)
	}

	var ok, reseal atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			out := make([]byte, seal.DEKSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.Derive(context.Background(), info, out)
				switch {
				case errors.Is(err, seal.ErrReseal):
					reseal.Add(1)
				case err != nil:
					t.Errorf("Derive: %v", err)
					return
				case !bytes.Equal(out, want[:]):
					t.Error("Derive returned a wrong key")
					return
				default:
					ok.Add(1)
				}
			}
		})
	}
	for range 20 {
		reseal.Store(0)
		m.ReIPL()
		deadline := time.Now().Add(10 * time.Second)
		for reseal.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no Derive saw ErrReseal after the re-IPL")
			}
			runtime.Gosched()
		}
		sealCopy(t, s, dek)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == 0 {
		t.Fatal("no Derive succeeded")
	}
}

func TestSealWipesEveryClearCopy(t *testing.T) {
	s, m := newSim(t)
	dek := newDEK(t)
	if err := s.Seal(t.Context(), dek); err != nil {
		t.Fatal(err)
	}
	zero := func(b []byte) bool { return bytes.Equal(b, make([]byte, len(b))) }
	if !zero(dek) {
		t.Error("caller's dek is not zero after Seal")
	}
	if len(m.blobs) == 0 {
		t.Fatal("the device was never called")
	}
	for i, b := range m.blobs {
		if !zero(b) {
			t.Errorf("clear key token %d handed to the device is not zero after Seal", i)
		}
	}
	if !zero(s.scratch.Bytes()) {
		t.Error("scratch memory is not zero after Seal")
	}
	if zero(s.pk.Bytes()) {
		t.Error("no protected key kept")
	}
}

func TestSealMakesTheKeyAgainWhenTheWrappingKeyChangesDuringTheCheck(t *testing.T) {
	s, m := newSim(t)
	m.reIPLOnceAfter = 1
	dek := newDEK(t)
	protects := m.protects
	sealCopy(t, s, dek)
	if got := m.protects - protects; got != 2 {
		t.Fatalf("Seal made %d protected keys, want 2", got)
	}
	got, err := derive(t, s, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := datakey.Derive(dek, []byte("x")); !bytes.Equal(got, want[:]) {
		t.Fatal("wrong key after the retried Seal")
	}
}

func TestFailedSealLeavesNothingSealed(t *testing.T) {
	tests := []struct {
		name string
		fail func(*machineSim)
	}{
		{"device error", func(m *machineSim) { m.protectErr = syscall.EIO }},
		{"protected key of another type", func(m *machineSim) { m.wrongKeyType = true }},
		{"protected key that does not hold the DEK", func(m *machineSim) { m.corruptKey = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, m := newSim(t)
			sealCopy(t, s, newDEK(t))
			tt.fail(m)
			dek := newDEK(t)
			if err := s.Seal(t.Context(), dek); err == nil {
				t.Fatal("Seal succeeded")
			}
			if !bytes.Equal(dek, make([]byte, len(dek))) {
				t.Error("dek not wiped after a failed Seal")
			}
			if _, err := derive(t, s, []byte("x")); !errors.Is(err, seal.ErrWiped) {
				t.Fatalf("Derive after a failed Seal: %v, want ErrWiped", err)
			}
		})
	}
}

func TestNewIsUnavailableWhereHMACProtectedKeysAreNot(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*machineSim)
	}{
		{"CPU without KMAC PHMAC-SHA-256", func(m *machineSim) { m.noKMACFunction = true }},
		{"kernel without PKEY_KBLOB2PROTK3 (ENOTTY)", func(m *machineSim) { m.protectErr = syscall.ENOTTY }},
		{"kernel without HMAC key types (EINVAL)", func(m *machineSim) { m.protectErr = syscall.EINVAL }},
		{"machine without PCKMO HMAC (ENODEV)", func(m *machineSim) { m.protectErr = syscall.ENODEV }},
		{"EOPNOTSUPP", func(m *machineSim) { m.protectErr = syscall.EOPNOTSUPP }},
		{"kernel answers with an AES key", func(m *machineSim) { m.wrongKeyType = true }},
		{"instruction disagrees with software HMAC", func(m *machineSim) { m.corruptKey = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachineSim()
			tt.setup(m)
			s, err := newSealer(m.device(), m.kmac())
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("newSealer: %v, want ErrUnavailable", err)
			}
			if s != nil {
				t.Error("newSealer returned a Sealer with its error")
			}
			if !m.devClosed {
				t.Error("device left open")
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestNewFailsWithoutErrUnavailableOnOtherDeviceErrors(t *testing.T) {
	m := newMachineSim()
	m.protectErr = syscall.EIO
	_, err := newSealer(m.device(), m.kmac())
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("newSealer with EIO: %v, want an error that is not ErrUnavailable", err)
	}
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("error %v does not wrap EIO", err)
	}
	if !m.devClosed {
		t.Error("device left open")
	}
}

func TestNewOnThisMachine(t *testing.T) {
	// Anywhere but linux/s390x with a kernel and CPU that have HMAC
	// protected keys, New must say ErrUnavailable; under qemu-s390x that is
	// the CPU query or the missing /dev/pkey. Where New succeeds, this is
	// the one run against the real instruction and kernel.
	s, err := New()
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("New: %v, want success or ErrUnavailable", err)
		}
		t.Logf("not available here: %v", err)
		return
	}
	_ = s.Close()
	t.Log("CPACF HMAC protected keys are available: running the conformance suite on them")
	sealtest.Run(t, func(t *testing.T) seal.Sealer {
		s, err := New()
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return s
	})
}

func TestDeriveRejectsInfoLongerThanDatakeyAllows(t *testing.T) {
	s, _ := newSim(t)
	sealCopy(t, s, newDEK(t))
	if _, err := derive(t, s, make([]byte, datakey.MaxInfoLen+1)); err == nil {
		t.Fatal("Derive accepted an info longer than datakey.MaxInfoLen")
	}
	if _, err := derive(t, s, make([]byte, datakey.MaxInfoLen)); err != nil {
		t.Fatalf("Derive with the longest info: %v", err)
	}
}

func TestErrorsNeverContainKeyBytes(t *testing.T) {
	const marker = "K3Y!"
	dek := []byte(strings.Repeat(marker, seal.DEKSize/len(marker)))
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		if msg := err.Error(); strings.Contains(msg, marker) || strings.Contains(msg, hex.EncodeToString([]byte(marker))) {
			t.Errorf("%s: error contains key bytes: %v", what, err)
		}
	}
	s, m := newSim(t)
	check("wrong size", s.Seal(t.Context(), append(bytes.Clone(dek), marker...)))
	m.corruptKey = true
	check("failed check", s.Seal(t.Context(), bytes.Clone(dek)))
	m.corruptKey = false
	m.protectErr = syscall.EIO
	check("device error", s.Seal(t.Context(), bytes.Clone(dek)))
}

func TestClearKeyTokenLayout(t *testing.T) {
	// struct clearkeytoken (drivers/s390/crypto/pkey_base.h) as the
	// phmac driver fills it for an HMAC-SHA-256 key: type 0x00, version
	// 0x02, keytype PKEY_KEYTYPE_HMAC_512, len 64, the key zero-padded to
	// the block; integers big-endian as on s390x.
	key := bytes.Repeat([]byte{0xab}, seal.DEKSize)
	tok := make([]byte, tokenSize)
	for i := range tok {
		tok[i] = 0xee // putClearKeyToken must overwrite every byte
	}
	putClearKeyToken(tok, key)
	want := "00000000" + "02000000" + "0000000c" + "00000040" +
		strings.Repeat("ab", 32) + strings.Repeat("00", 32)
	if got := hex.EncodeToString(tok); got != want {
		t.Fatalf("token\n got %s\nwant %s", got, want)
	}
}

func TestInstalledReadsQueryBitsFromTheLeft(t *testing.T) {
	var status [16]byte
	status[0] = 0x80
	status[15] = 0x40
	for fc, want := range map[int]bool{0: true, 1: false, 0x79: true, 0x78: false, 0x7a: false, 0x71: false} {
		if got := installed(status, fc); got != want {
			t.Errorf("installed(%#x) = %v, want %v", fc, got, want)
		}
	}
}

func BenchmarkSimulatedDerive(b *testing.B) {
	s, _ := newSim(b)
	sealCopy(b, s, newDEK(b))
	info := []byte("byokd/v1/prod-eu/db1.collection-7")
	out := make([]byte, seal.DEKSize)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Derive(b.Context(), info, out); err != nil {
			b.Fatal(err)
		}
	}
}
