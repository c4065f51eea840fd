// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// victim is a file an attacker would like byokd to overwrite, chmod or read
// as its key; the test checks it is left exactly as it was.
type victim struct {
	path string
	data []byte
	mode fs.FileMode
}

func plantVictim(t *testing.T, data string) victim {
	t.Helper()
	v := victim{path: filepath.Join(t.TempDir(), "victim"), data: []byte(data), mode: 0o644}
	if err := os.WriteFile(v.path, v.data, v.mode); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v victim) check(t *testing.T) {
	t.Helper()
	fi, err := os.Lstat(v.path)
	if err != nil {
		t.Fatalf("victim %s: %v", v.path, err)
	}
	got, _ := os.ReadFile(v.path)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != v.mode || !bytes.Equal(got, v.data) {
		t.Fatalf("byokd touched %s through a planted path: mode %v, content %q", v.path, fi.Mode(), got)
	}
}

func wantSymlink(t *testing.T, path string) {
	t.Helper()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("%s is no longer the planted symlink: %v %v", path, fi, err)
	}
}

// TestPlantedPathsAreRefusedNotFollowed plants symlinks and foreign files at
// byokd's socket and state paths, and makes its config and API key files
// writable by others: byokd refuses each with an error naming the path, and
// the planted target is left untouched.
func TestPlantedPathsAreRefusedNotFollowed(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "files-root")
	opts := testenv.Options{RootKeyID: root, Provision: true}

	t.Run("symlink at the socket path", func(t *testing.T) {
		v := plantVictim(t, "not a socket\n")
		b := testenv.PrepareByokd(t, k, opts)
		if err := os.Symlink(v.path, b.Socket); err != nil {
			t.Fatal(err)
		}
		out := b.RunToExit(t)
		wantAll(t, out, b.Socket, "symlink")
		wantSymlink(t, b.Socket)
		v.check(t)
	})
	t.Run("foreign file at the socket path", func(t *testing.T) {
		b := testenv.PrepareByokd(t, k, opts)
		if err := os.WriteFile(b.Socket, []byte("someone's data\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := b.RunToExit(t)
		wantAll(t, out, b.Socket, "not a socket")
		if got, _ := os.ReadFile(b.Socket); string(got) != "someone's data\n" {
			t.Fatalf("the foreign file at the socket path changed: %q", got)
		}
	})
	t.Run("symlink as the state folder", func(t *testing.T) {
		b := testenv.PrepareByokd(t, k, opts)
		state := filepath.Join(b.Dir, "state")
		elsewhere := t.TempDir()
		if err := os.Remove(state); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, state); err != nil {
			t.Fatal(err)
		}
		out := b.RunToExit(t)
		wantAll(t, out, state, "symlink")
		wantSymlink(t, state)
		if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
			t.Fatalf("byokd wrote %d files through the symlinked state folder", len(ents))
		}
	})
	t.Run("symlink at the key file", func(t *testing.T) {
		// A provisioning byokd must neither read the target as its key
		// nor write a new key through the link: it stays locked.
		v := plantVictim(t, `{"schema":1}`+"\n")
		b := testenv.PrepareByokd(t, k, opts)
		keyFile := filepath.Join(b.Dir, "state", "dek.json")
		if err := os.Symlink(v.path, keyFile); err != nil {
			t.Fatal(err)
		}
		b.Start(t)
		st := b.WaitState(t, b.Client(), pb.State_STATE_LOCKED, 10*time.Second)
		wantAll(t, st.GetReason(), "wrapped key file unusable")
		wantAll(t, b.Logs(), keyFile, "symlink")
		time.Sleep(1500 * time.Millisecond) // another poll round
		if s := b.WaitState(t, b.Client(), pb.State_STATE_LOCKED, time.Second); s.GetState() != pb.State_STATE_LOCKED {
			t.Fatalf("state %v after another round", s.GetState())
		}
		wantSymlink(t, keyFile)
		v.check(t)
	})
	t.Run("config writable by the group", func(t *testing.T) {
		b := testenv.PrepareByokd(t, k, opts)
		if err := os.Chmod(b.Config, 0o620); err != nil {
			t.Fatal(err)
		}
		wantAll(t, b.RunToExit(t), b.Config, "0620")
	})
	t.Run("API key file writable by others", func(t *testing.T) {
		b := testenv.PrepareByokd(t, k, opts)
		apiKey := filepath.Join(b.Dir, "apikey")
		if err := os.Chmod(apiKey, 0o602); err != nil {
			t.Fatal(err)
		}
		out := b.RunToExit(t)
		wantAll(t, out, apiKey, "0602")
		if strings.Contains(out, testenv.APIKey) {
			t.Fatal("the API key is in the error")
		}
	})
}

// TestStateFilesArePrivate provisions, rotates (so a .prev is kept) and checks
// every file byokd keeps in its state folder is 0600 and the folder 0700.
func TestStateFilesArePrivate(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "files-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	c := b.Client()
	v1 := b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second).GetKeyVersion()
	rotate(t, k, root, b, c, v1)
	state := filepath.Join(b.Dir, "state")
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state folder: %v %v, want 0700", fi.Mode(), err)
	}
	ents, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		fi, err := os.Lstat(filepath.Join(state, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file %s: %v, want a regular file of mode 0600", e.Name(), fi.Mode())
		}
	}
	if len(names) < 2 {
		t.Fatalf("state folder holds %v, want at least dek.json and dek.json.prev", names)
	}
	t.Logf("state files, all 0600: %v", names)
}

func wantAll(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("want %q in:\n%s", sub, s)
		}
	}
}
