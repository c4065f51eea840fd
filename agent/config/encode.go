// SPDX-License-Identifier: Apache-2.0

package config

import (
	"bytes"

	"github.com/pelletier/go-toml/v2"
)

// Marshal writes a valid c as a configuration file that Parse reads back
// as c, for code that writes byokd's configuration (tests, tools). Every
// key is written except the lists that are empty and an empty
// keyprotect.api_key_file, which is left out so that the systemd
// credential applies, as it does for a Config that Parse returns.
func Marshal(c *Config) ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
