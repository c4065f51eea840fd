// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const (
	// credentialsEnv is set by systemd to the directory of the unit's
	// credentials (LoadCredential=, SetCredentialEncrypted=).
	credentialsEnv = "CREDENTIALS_DIRECTORY"
	// credentialName is the credential holding the API key.
	credentialName = "kp-apikey"
	// maxAPIKeySize bounds what is read; an IBM Cloud API key is 44 bytes.
	maxAPIKeySize = 4096
	redacted      = "[redacted]"
)

// APIKey is an IAM API key. Every way of printing, logging or encoding it
// writes "[redacted]"; only Reveal gives the key. It holds the key behind a
// pointer so that printing a struct that holds an APIKey in an unexported
// field, which fmt does by reflection without calling methods, shows an
// address rather than the key.
type APIKey struct {
	key *string
}

// Reveal returns the key, for the one call that authenticates with it.
func (k APIKey) Reveal() string {
	if k.key == nil {
		return ""
	}
	return *k.key
}

// String returns "[redacted]".
func (APIKey) String() string { return redacted }

// GoString returns "[redacted]".
func (APIKey) GoString() string { return redacted }

// Format writes "[redacted]" for every verb, %x and %q included.
func (APIKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue returns "[redacted]".
func (APIKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so that encoding/json and the like do
// not write the key either.
func (APIKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LoadAPIKey reads the IAM API key from keyprotect.api_key_file or, when
// that is empty, from the systemd credential
// $CREDENTIALS_DIRECTORY/kp-apikey. Surrounding whitespace, such as the
// newline an editor adds, is trimmed.
//
// The file must be a regular file, not a symbolic link. A file outside
// $CREDENTIALS_DIRECTORY, which systemd does not guard, must also be owned
// by root or by the user byokd runs as, and give no access to group or
// others (mode & 0o077 == 0). Errors name the path and the mode, never the
// content.
func (c *Config) LoadAPIKey() (APIKey, error) {
	credDir := os.Getenv(credentialsEnv)
	path := c.KeyProtect.APIKeyFile
	if path == "" {
		if credDir == "" {
			return APIKey{}, fmt.Errorf("read api key: keyprotect.api_key_file is empty and $%s is not set", credentialsEnv)
		}
		path = filepath.Join(credDir, credentialName)
	}
	return readAPIKey(path, credDir != "" && within(credDir, path))
}

// within reports whether path is inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && filepath.IsAbs(path)
}

func readAPIKey(path string, credential bool) (APIKey, error) {
	before, err := os.Lstat(path)
	if err != nil {
		return APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	if err := checkKeyFile(path, before, credential); err != nil {
		return APIKey{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	defer f.Close()
	// Check the file that was opened, in case the path was swapped for a
	// symbolic link or another file after Lstat.
	fi, err := f.Stat()
	if err != nil {
		return APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	if !os.SameFile(before, fi) {
		return APIKey{}, fmt.Errorf("read api key %s: file was replaced while being opened", path)
	}
	if err := checkKeyFile(path, fi, credential); err != nil {
		return APIKey{}, err
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxAPIKeySize+1))
	defer clear(buf)
	if err != nil {
		return APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	if len(buf) > maxAPIKeySize {
		return APIKey{}, fmt.Errorf("read api key %s: larger than %d bytes", path, maxAPIKeySize)
	}
	key := strings.TrimSpace(string(buf))
	if key == "" {
		return APIKey{}, fmt.Errorf("read api key %s: file is empty", path)
	}
	for i := range len(key) {
		if key[i] <= ' ' || key[i] >= 0x7f {
			return APIKey{}, fmt.Errorf("read api key %s: the key contains whitespace or a non-printable character; the file must hold the key alone", path)
		}
	}
	return APIKey{key: &key}, nil
}

func checkKeyFile(path string, fi os.FileInfo, credential bool) error {
	mode := fi.Mode()
	if mode&os.ModeSymlink != 0 {
		return fmt.Errorf("read api key %s: is a symbolic link; point keyprotect.api_key_file at the file itself", path)
	}
	if !mode.IsRegular() {
		return fmt.Errorf("read api key %s: not a regular file (mode %s)", path, mode)
	}
	if credential {
		return nil
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("read api key %s: mode %04o gives group or others access (chmod 600 %s)", path, uint32(perm), path)
	}
	if uid, ok := owner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("read api key %s: owned by uid %d, not by root or by uid %d that byokd runs as", path, uid, os.Geteuid())
	}
	return nil
}
