// SPDX-License-Identifier: Apache-2.0

package datakey

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// referenceExpand is HKDF-Expand-SHA256 for L = 32 written directly from
// RFC 5869 §2.3 with crypto/hmac, independent of Derive's own HMAC.
func referenceExpand(prk, info []byte) []byte {
	m := hmac.New(sha256.New, prk)
	m.Write(info)
	m.Write([]byte{0x01})
	return m.Sum(nil)
}

func TestDeriveMatchesRFC5869TestVectors(t *testing.T) {
	// RFC 5869 Appendix A, test cases 1–3 (SHA-256). Their L is 42 or 82,
	// so the expected value is the first 32 bytes of OKM, which is T(1).
	tests := []struct {
		name, prk, info, okm string
	}{
		{
			"test case 1",
			"077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
			"f0f1f2f3f4f5f6f7f8f9",
			"3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf",
		},
		{
			"test case 2, 80-byte info",
			"06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
			"b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf" +
				"d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef" +
				"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
			"b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c",
		},
		{
			"test case 3, empty info",
			"19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
			"",
			"8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Derive(unhex(t, tt.prk), unhex(t, tt.info))
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, tt.okm); !bytes.Equal(got[:], want) {
				t.Fatalf("Derive = %x, want %x", got, want)
			}
		})
	}
}

func TestDeriveMatchesCryptoHMACAndHKDFOnRandomInputs(t *testing.T) {
	for i := range 2000 {
		prk := make([]byte, Size)
		rand.Read(prk)
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(MaxInfoLen)+1))
		info := make([]byte, n.Int64())
		rand.Read(info)
		got, err := Derive(prk, info)
		if err != nil {
			t.Fatal(err)
		}
		if want := referenceExpand(prk, info); !bytes.Equal(got[:], want) {
			t.Fatalf("case %d (info %d bytes): Derive = %x, crypto/hmac = %x", i, len(info), got, want)
		}
		want, err := hkdf.Expand(sha256.New, prk, string(info), Size)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:], want) {
			t.Fatalf("case %d (info %d bytes): Derive = %x, crypto/hkdf = %x", i, len(info), got, want)
		}
	}
}

func TestDeriveRejectsWrongPRKAndInfoLengthsWithoutEchoingKey(t *testing.T) {
	secret := func(n int) []byte { return bytes.Repeat([]byte("K3Y!"), n/4+1)[:n] }
	tests := []struct {
		name string
		prk  []byte
		info []byte
	}{
		{"empty prk", nil, nil},
		{"16-byte prk", secret(16), nil},
		{"31-byte prk", secret(31), nil},
		{"33-byte prk", secret(33), nil},
		{"64-byte prk", secret(64), nil},
		{"info one byte too long", secret(32), make([]byte, MaxInfoLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Derive(tt.prk, tt.info)
			if err == nil {
				t.Fatal("Derive succeeded")
			}
			if out != [Size]byte{} {
				t.Errorf("Derive returned a non-zero key with an error")
			}
			if len(tt.prk) >= 4 && strings.Contains(err.Error(), "K3Y!") {
				t.Errorf("error contains key bytes: %v", err)
			}
		})
	}
}

func TestDeriveAcceptsTheLongestInfoInfoCanBuild(t *testing.T) {
	info, err := Info(strings.Repeat("c", MaxClusterIDLen), strings.Repeat("k", MaxKeyIDLen))
	if err != nil {
		t.Fatal(err)
	}
	if len(info) != MaxInfoLen {
		t.Fatalf("longest info is %d bytes, MaxInfoLen is %d", len(info), MaxInfoLen)
	}
	prk := make([]byte, Size)
	got, err := Derive(prk, info)
	if err != nil {
		t.Fatal(err)
	}
	if want := referenceExpand(prk, info); !bytes.Equal(got[:], want) {
		t.Fatalf("Derive = %x, want %x", got, want)
	}
}

func TestDeriveDoesNotAllocate(t *testing.T) {
	// No allocation means no heap copy of the key or its padded blocks
	// that Derive could not wipe.
	prk := make([]byte, Size)
	info := []byte("byokd/v1/cluster/table")
	if n := testing.AllocsPerRun(100, func() { _, _ = Derive(prk, info) }); n != 0 {
		t.Fatalf("Derive allocates %v times per call", n)
	}
}

func TestInfoBuildsVersionedInfoOrRejectsBadIDs(t *testing.T) {
	tests := []struct {
		name, cluster, key string
		want               string
		err                error
	}{
		{"plain", "prod-eu", "db1.table", "byokd/v1/prod-eu/db1.table", nil},
		{"key id may hold slashes and spaces", "c", "a/b c", "byokd/v1/c/a/b c", nil},
		{"printable edges", " ~", " ~", "byokd/v1/ ~/ ~", nil},
		{"longest ids", strings.Repeat("c", 128), strings.Repeat("k", 255),
			"byokd/v1/" + strings.Repeat("c", 128) + "/" + strings.Repeat("k", 255), nil},
		{"empty cluster", "", "k", "", ErrInvalidClusterID},
		{"cluster too long", strings.Repeat("c", 129), "k", "", ErrInvalidClusterID},
		{"cluster with slash", "a/b", "k", "", ErrInvalidClusterID},
		{"cluster with newline", "a\n", "k", "", ErrInvalidClusterID},
		{"cluster with DEL", "a\x7f", "k", "", ErrInvalidClusterID},
		{"cluster with UTF-8", "clüster", "k", "", ErrInvalidClusterID},
		{"empty key", "c", "", "", ErrInvalidKeyID},
		{"key too long", "c", strings.Repeat("k", 256), "", ErrInvalidKeyID},
		{"key with NUL", "c", "k\x00", "", ErrInvalidKeyID},
		{"key with tab", "c", "k\t", "", ErrInvalidKeyID},
		{"key with high byte", "c", "k\xff", "", ErrInvalidKeyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Info(tt.cluster, tt.key)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Info error = %v, want %v", err, tt.err)
			}
			if string(got) != tt.want {
				t.Fatalf("Info = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInfoCannotBeMadeToCollideAcrossClusterAndKeyIDs(t *testing.T) {
	// Without the '/' rule, ("a/b", "c") and ("a", "b/c") would share an
	// info and so a data key.
	if _, err := Info("a/b", "c"); !errors.Is(err, ErrInvalidClusterID) {
		t.Fatalf("Info(\"a/b\", \"c\") error = %v, want ErrInvalidClusterID", err)
	}
	if _, err := Info("a", "b/c"); err != nil {
		t.Fatalf("Info(\"a\", \"b/c\"): %v", err)
	}
}

func TestInfoErrorsDoNotEchoTheIDs(t *testing.T) {
	const marker = "SECRET-LOOKING-ID"
	for _, ids := range [][2]string{{marker + "/", "k"}, {"c", marker + "\n"}} {
		_, err := Info(ids[0], ids[1])
		if err == nil {
			t.Fatalf("Info(%q, %q) succeeded", ids[0], ids[1])
		}
		if strings.Contains(err.Error(), marker) {
			t.Errorf("error echoes the id: %v", err)
		}
	}
}

// validID is an independent statement of the id rules for FuzzInfo.
func validID(s string, maxLen int, noSlash bool) bool {
	if len(s) < 1 || len(s) > maxLen {
		return false
	}
	for _, c := range []byte(s) {
		if c < ' ' || c > '~' || (noSlash && c == '/') {
			return false
		}
	}
	return true
}

func FuzzInfo(f *testing.F) {
	f.Add("prod", "db/table")
	f.Add("", "")
	f.Add("a/b", "c")
	f.Add("c", "k\x00")
	f.Add(strings.Repeat("c", 129), "k")
	f.Fuzz(func(t *testing.T, cluster, key string) {
		info, err := Info(cluster, key)
		okCluster := validID(cluster, MaxClusterIDLen, true)
		okKey := validID(key, MaxKeyIDLen, false)
		switch {
		case !okCluster:
			if !errors.Is(err, ErrInvalidClusterID) {
				t.Fatalf("Info(%q, %q) error = %v, want ErrInvalidClusterID", cluster, key, err)
			}
		case !okKey:
			if !errors.Is(err, ErrInvalidKeyID) {
				t.Fatalf("Info(%q, %q) error = %v, want ErrInvalidKeyID", cluster, key, err)
			}
		default:
			if err != nil {
				t.Fatalf("Info(%q, %q): %v", cluster, key, err)
			}
			if want := Prefix + cluster + "/" + key; string(info) != want || len(info) > MaxInfoLen {
				t.Fatalf("Info(%q, %q) = %q, want %q (at most %d bytes)", cluster, key, info, want, MaxInfoLen)
			}
		}
	})
}

func BenchmarkDerive(b *testing.B) {
	prk := make([]byte, Size)
	info := []byte("byokd/v1/prod-eu/db1.collection-7")
	for b.Loop() {
		_, _ = Derive(prk, info)
	}
}

func TestKMIPInfoIsNeverAKeyProviderInfo(t *testing.T) {
	got, err := KMIPInfo("c1", "0f1e2d3c-aaaa-bbbb-cccc-000000000001")
	if err != nil {
		t.Fatal(err)
	}
	if want := "byokd/kmip/v1/c1/0f1e2d3c-aaaa-bbbb-cccc-000000000001"; string(got) != want {
		t.Fatalf("KMIPInfo = %q, want %q", got, want)
	}
	// Every key provider info starts with Prefix; a KMIP info never does,
	// whatever key id a caller of the socket picks.
	if strings.HasPrefix(string(got), Prefix) {
		t.Fatalf("KMIP info %q starts with the key provider's prefix %q", got, Prefix)
	}
	for _, keyID := range []string{"kmip/v1/c1/x", "../kmip/v1/c1/x", string(got)} {
		info, err := Info("c1", keyID)
		if err != nil {
			continue
		}
		if strings.HasPrefix(string(info), KMIPPrefix) {
			t.Fatalf("key id %q gives KMIP info %q", keyID, info)
		}
	}
	long, err := KMIPInfo(strings.Repeat("c", MaxClusterIDLen), strings.Repeat("o", MaxObjectIDLen))
	if err != nil || len(long) != MaxInfoLen {
		t.Fatalf("longest KMIPInfo: %d bytes, %v; want %d", len(long), err, MaxInfoLen)
	}
	if _, err := KMIPInfo("c1", strings.Repeat("o", MaxObjectIDLen+1)); !errors.Is(err, ErrInvalidKeyID) {
		t.Fatalf("too long object id: %v, want ErrInvalidKeyID", err)
	}
	if _, err := KMIPInfo("c/1", "x"); !errors.Is(err, ErrInvalidClusterID) {
		t.Fatalf("cluster id with '/': %v, want ErrInvalidClusterID", err)
	}
}
