// SPDX-License-Identifier: Apache-2.0

//go:build unix

package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testKey = "TESTKEY-0123456789abcdefghijklmnopqrstuvwxyzAB"

// writeFile writes data at dir/name with exactly mode perm, whatever the umask.
func writeFile(t *testing.T, dir, name, data string, perm fs.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadReadsAPrivateRegularFile(t *testing.T) {
	noCredentials(t)
	dir := t.TempDir()
	for _, perm := range []fs.FileMode{0o600, 0o640, 0o644, 0o400} {
		p := writeFile(t, dir, fmt.Sprintf("config-%o.toml", perm), minimal, perm)
		cfg, err := Load(p)
		if err != nil {
			t.Errorf("mode %04o: %v", perm, err)
			continue
		}
		if cfg.ClusterID != "c1" {
			t.Errorf("mode %04o: cluster id %q", perm, cfg.ClusterID)
		}
	}
	// A symbolic link to a safe file is fine: distributions such as NixOS
	// link /etc files into a store.
	target := writeFile(t, dir, "target.toml", minimal, 0o644)
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); err != nil {
		t.Errorf("symlink to a safe file: %v", err)
	}
}

func TestLoadRefusesAFileOthersCanWriteOrThatIsNotRegular(t *testing.T) {
	noCredentials(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := writeFile(t, dir, "big.toml", minimal+strings.Repeat("#", maxFileSize), 0o600)
	tests := []struct {
		name string
		path string
		want string
	}{
		{"group writable", writeFile(t, dir, "g.toml", minimal, 0o664), "mode 0664 lets group or others write it (chmod go-w %s)"},
		{"world writable", writeFile(t, dir, "o.toml", minimal, 0o602), "mode 0602 lets group or others write it (chmod go-w %s)"},
		{"directory", dir, "not a regular file (mode d"},
		{"fifo", fifo, "not a regular file (mode p"},
		{"too large", big, "larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			var cfg *Config
			var err error
			go func() { cfg, err = Load(tt.path); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Load blocked")
			}
			if cfg != nil || err == nil {
				t.Fatalf("Load accepted %s", tt.path)
			}
			want := tt.path + ": " + strings.ReplaceAll(tt.want, "%s", tt.path)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q\nwant prefix %q", err, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != tt.path {
				t.Errorf("error %v is not a *config.Error for the file", err)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestLoadReportsTheFilePathInEveryProblem(t *testing.T) {
	noCredentials(t)
	p := writeFile(t, t.TempDir(), "config.toml", strings.Replace(minimal, "[socket]", "timeout = \"10 seconds\"\n[socket]", 1), 0o600)
	_, err := Load(p)
	if want := p + `:7: keyprotect.timeout: invalid duration "10 seconds"`; err == nil || err.Error() != want {
		t.Errorf("Load: %v\nwant %s", err, want)
	}
}

func configWithKeyFile(path string) *Config {
	c := defaults()
	c.KeyProtect.APIKeyFile = path
	return c
}

func TestLoadAPIKeyReadsAPrivateFileAndTrimsTheNewline(t *testing.T) {
	noCredentials(t)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"bare":    testKey,
		"newline": testKey + "\n",
		"crlf":    testKey + "\r\n",
		"spaces":  "  " + testKey + " \n",
	} {
		p := writeFile(t, dir, name, content, 0o600)
		key, err := configWithKeyFile(p).LoadAPIKey()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if key.Reveal() != testKey {
			t.Errorf("%s: Reveal() = %q", name, key.Reveal())
		}
	}
	p := writeFile(t, dir, "readonly", testKey, 0o400)
	if _, err := configWithKeyFile(p).LoadAPIKey(); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestLoadAPIKeyRefusesUnsafeOrMalformedFiles(t *testing.T) {
	noCredentials(t)
	dir := t.TempDir()
	safe := writeFile(t, dir, "safe", testKey, 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(safe, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want string
	}{
		{"group readable", writeFile(t, dir, "g", testKey, 0o640), "read api key %s: mode 0640 gives group or others access (chmod 600 %s)"},
		{"world readable", writeFile(t, dir, "o", testKey, 0o604), "read api key %s: mode 0604 gives group or others access (chmod 600 %s)"},
		{"group writable", writeFile(t, dir, "gw", testKey, 0o620), "read api key %s: mode 0620 gives group or others access (chmod 600 %s)"},
		{"symbolic link", link, "read api key %s: is a symbolic link; point keyprotect.api_key_file at the file itself"},
		{"directory", dir, "read api key %s: not a regular file (mode d"},
		{"fifo", fifo, "read api key %s: not a regular file (mode p"},
		{"empty", writeFile(t, dir, "empty", "", 0o600), "read api key %s: file is empty"},
		{"only a newline", writeFile(t, dir, "nl", "\n", 0o600), "read api key %s: file is empty"},
		{"two lines", writeFile(t, dir, "two", testKey+"\n# comment "+testKey+"\n", 0o600), "read api key %s: the key contains whitespace or a non-printable character; the file must hold the key alone"},
		{"key and name", writeFile(t, dir, "kv", "apikey="+testKey+" x", 0o600), "read api key %s: the key contains whitespace"},
		{"too large", writeFile(t, dir, "big", testKey+strings.Repeat("A", maxAPIKeySize), 0o600), "read api key %s: larger than 4096 bytes"},
		{"missing", filepath.Join(dir, "nope"), "read api key: lstat %s: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			var key APIKey
			var err error
			go func() { key, err = configWithKeyFile(tt.path).LoadAPIKey(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("LoadAPIKey blocked")
			}
			if err == nil {
				t.Fatalf("LoadAPIKey accepted %s", tt.path)
			}
			if key.Reveal() != "" {
				t.Error("LoadAPIKey returned a key along with an error")
			}
			if want := strings.ReplaceAll(tt.want, "%s", tt.path); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q\nwant prefix %q", err, want)
			}
			if strings.Contains(err.Error(), testKey[:12]) {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}
}

func TestLoadAPIKeyRefusesAFileOfAnotherUser(t *testing.T) {
	noCredentials(t)
	fi := fakeFileInfo{mode: 0o600, uid: 4242}
	if os.Geteuid() == 4242 {
		fi.uid = 4243
	}
	err := checkKeyFile("/etc/byokd/kp-apikey", fi, false)
	want := fmt.Sprintf("read api key /etc/byokd/kp-apikey: owned by uid %d, not by root or by uid %d that byokd runs as", fi.uid, os.Geteuid())
	if err == nil || err.Error() != want {
		t.Errorf("checkKeyFile: %v\nwant %s", err, want)
	}
	for _, uid := range []uint32{0, uint32(os.Geteuid())} {
		if err := checkKeyFile("/k", fakeFileInfo{mode: 0o600, uid: uid}, false); err != nil {
			t.Errorf("owned by uid %d: %v", uid, err)
		}
	}
	// systemd owns the credential directory and sets its modes.
	if err := checkKeyFile("/run/credentials/byokd.service/kp-apikey", fakeFileInfo{mode: 0o644, uid: 4242}, true); err != nil {
		t.Errorf("credential: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: the real chown case is left to the fake above")
		return
	}
	p := writeFile(t, t.TempDir(), "key", testKey, 0o600)
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := configWithKeyFile(p).LoadAPIKey(); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Errorf("file of uid 4242: %v", err)
	}
}

type fakeFileInfo struct {
	mode fs.FileMode
	uid  uint32
}

func (f fakeFileInfo) Name() string       { return "kp-apikey" }
func (f fakeFileInfo) Size() int64        { return int64(len(testKey)) }
func (f fakeFileInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeFileInfo) ModTime() time.Time { return time.Time{} }
func (f fakeFileInfo) IsDir() bool        { return false }
func (f fakeFileInfo) Sys() any           { return &syscall.Stat_t{Uid: f.uid} }

func TestLoadAPIKeyReadsTheSystemdCredential(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(credentialsEnv, dir)
	// systemd makes credentials readable by the service however it likes;
	// the mode is not byokd's to judge there.
	writeFile(t, dir, credentialName, testKey+"\n", 0o440)
	for name, cfg := range map[string]*Config{
		"api_key_file empty":            configWithKeyFile(""),
		"api_key_file as Parse sets it": configWithKeyFile(filepath.Join(dir, credentialName)),
	} {
		key, err := cfg.LoadAPIKey()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if key.Reveal() != testKey {
			t.Errorf("%s: Reveal() = %q", name, key.Reveal())
		}
	}
	// A file outside the credential directory is still held to the rules.
	other := writeFile(t, t.TempDir(), "kp-apikey", testKey, 0o440)
	if _, err := configWithKeyFile(other).LoadAPIKey(); err == nil {
		t.Error("a group-readable file outside $CREDENTIALS_DIRECTORY was accepted")
	}
	// A symbolic link inside it is still refused.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if _, err := configWithKeyFile(link).LoadAPIKey(); err == nil {
		t.Error("a symbolic link in $CREDENTIALS_DIRECTORY was accepted")
	}

	noCredentials(t)
	_, err := configWithKeyFile("").LoadAPIKey()
	if want := "read api key: keyprotect.api_key_file is empty and $CREDENTIALS_DIRECTORY is not set"; err == nil || err.Error() != want {
		t.Errorf("no file, no credential: %v", err)
	}
}

func TestWithinMatchesOnlyPathsInsideTheDirectory(t *testing.T) {
	tests := []struct {
		dir, path string
		want      bool
	}{
		{"/run/credentials/byokd.service", "/run/credentials/byokd.service/kp-apikey", true},
		{"/run/credentials/byokd.service/", "/run/credentials/byokd.service/kp-apikey", true},
		{"/run/credentials/byokd.service", "/run/credentials/byokd.service", false},
		{"/run/credentials/byokd.service", "/run/credentials/byokd.service/../other/kp-apikey", false},
		{"/run/credentials/byokd.service", "/run/credentials/byokd.servicex/kp-apikey", false},
		{"/run/credentials/byokd.service", "kp-apikey", false},
	}
	for _, tt := range tests {
		if got := within(tt.dir, tt.path); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.dir, tt.path, got, tt.want)
		}
	}
}

func TestAPIKeyNeverPrintsOrLogsItsValue(t *testing.T) {
	p := writeFile(t, t.TempDir(), "key", testKey, 0o600)
	key, err := configWithKeyFile(p).LoadAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	if key.Reveal() != testKey {
		t.Fatal("the key did not load; the test proves nothing")
	}
	type exported struct{ Key APIKey }
	type unexported struct{ key APIKey }
	var outs []string
	for _, v := range []any{key, &key, exported{key}, &exported{key}, unexported{key}, []APIKey{key}, map[string]APIKey{"k": key}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		outs = append(outs, fmt.Sprint(v), fmt.Sprintln(v))
	}
	outs = append(outs, key.String(), key.GoString(), fmt.Errorf("wrapped: %v", key).Error())

	var text, js bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
		l := slog.New(h)
		l.Info("k", "api_key", key, "ptr", &key, "struct", exported{key})
		l.Info("k", slog.Any("api_key", key), slog.Group("g", "api_key", key))
		l.With("api_key", key).Info("with")
	}
	outs = append(outs, text.String(), js.String())
	b, err := json.Marshal(exported{key})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"Key":"[redacted]"}` {
		t.Errorf("json.Marshal = %s", b)
	}

	for _, out := range outs {
		if strings.Contains(out, testKey) || strings.Contains(out, fmt.Sprintf("%x", testKey)[:16]) {
			t.Errorf("the key shows in %q", out)
		}
	}
	if !strings.Contains(text.String(), "api_key=[redacted]") || !strings.Contains(js.String(), `"api_key":"[redacted]"`) {
		t.Errorf("slog did not write [redacted]:\n%s%s", text.String(), js.String())
	}
	if got := fmt.Sprintf("%v|%#v|%s", key, key, key); got != "[redacted]|[redacted]|[redacted]" {
		t.Errorf("fmt = %q", got)
	}
}

// TestLoadRefusesAConfigOfAnotherUser: a config file its owner can rewrite
// is byokd's config only when that owner is root or byokd's own user; a
// user-owned 0644 file was accepted.
func TestLoadRefusesAConfigOfAnotherUser(t *testing.T) {
	fi := fakeFileInfo{mode: 0o644, uid: 4242}
	if os.Geteuid() == 4242 {
		fi.uid = 4243
	}
	err := checkFile("/etc/byokd/config.toml", fi)
	want := fmt.Sprintf("/etc/byokd/config.toml: owned by uid %d, who can rewrite it; it must be owned by root or by uid %d that byokd runs as (chown root /etc/byokd/config.toml)", fi.uid, os.Geteuid())
	if err == nil || err.Error() != want {
		t.Errorf("checkFile: %v\nwant %s", err, want)
	}
	for _, uid := range []uint32{0, uint32(os.Geteuid())} {
		if err := checkFile("/c.toml", fakeFileInfo{mode: 0o644, uid: uid}); err != nil {
			t.Errorf("owned by uid %d: %v", uid, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns a file to another user and needs root (CI runs as root)")
	}
	p := writeFile(t, t.TempDir(), "config.toml", minimal, 0o644)
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Errorf("config of uid 4242: %v", err)
	}
}
