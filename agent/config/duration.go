// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the configuration as a string such
// as "15s", "10m" or "1h30m". A whole number of days may lead, as in "7d" or
// "1d12h", since nobody should have to work out that a week is "168h".
type Duration time.Duration

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := parseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String writes the duration the way an operator would: "10m", "1h", "1m30s",
// "7d", not "10m0s", "1h0m0s" or "168h0m0s".
func (d Duration) String() string {
	const day = 24 * time.Hour
	if d > 0 && time.Duration(d)%day == 0 {
		return strconv.FormatInt(int64(time.Duration(d)/day), 10) + "d"
	}
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func parseDuration(s string) (time.Duration, error) {
	invalid := fmt.Errorf("invalid duration %q", s)
	rest := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, invalid
		}
		days = time.Duration(n) * 24 * time.Hour
		rest = s[i+1:]
		if rest == "" {
			return days, nil
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, invalid
		}
	}
	v, err := time.ParseDuration(rest)
	if err != nil {
		return 0, invalid
	}
	return days + v, nil
}

// FileMode is a file's permission bits, written in the configuration as an
// octal string such as "0660" so that nobody writes the decimal 660 by
// mistake (TOML has no leading-zero octal integers).
type FileMode fs.FileMode

// UnmarshalText parses an octal string of three digits with an optional
// leading "0" or "0o": "0660", "660", "0o660".
func (m *FileMode) UnmarshalText(text []byte) error {
	s := string(text)
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0")
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || len(digits) != 3 {
		return fmt.Errorf("invalid mode %q: want an octal string such as \"0660\"", s)
	}
	*m = FileMode(v)
	return nil
}

// MarshalText writes the mode as four octal digits, such as "0660".
func (m FileMode) MarshalText() ([]byte, error) {
	return []byte(m.String()), nil
}

// String writes the mode as four octal digits, such as "0660".
func (m FileMode) String() string {
	return fmt.Sprintf("%04o", uint32(m))
}

// Perm returns the mode as an fs.FileMode for os.Chmod.
func (m FileMode) Perm() fs.FileMode {
	return fs.FileMode(m).Perm()
}
