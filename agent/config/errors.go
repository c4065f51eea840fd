// SPDX-License-Identifier: Apache-2.0

package config

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Error is one problem in a configuration file, located by file, line and
// key so that an operator can go straight to it. Parse and Load return every
// Error they find, joined with errors.Join; errors.As finds the first.
type Error struct {
	// File is the name given to Parse or the path given to Load.
	File string
	// Line is the 1-based line of the key, of its table when the key is
	// missing, or 0 when neither is in the file.
	Line int
	// Key is the dotted key, such as "keyprotect.timeout" or
	// "lock_action[0].command"; "" when the problem is the file itself.
	Key string
	// Msg says what is wrong, without the location.
	Msg string
	// Err is the underlying error, if any.
	Err error
}

// Error formats the problem as "file:line: key: msg".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// joinErrors sorts errs by line, those without a line last, and joins them.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Line, b.Line)
	})
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// fromDecoder turns an error of go-toml's decoder into located errors.
// qualify, if not nil, completes a key the decoder gives relative to its
// table.
func fromDecoder(file string, err error, qualify func(line int, key string) string) []*Error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make([]*Error, 0, len(strict.Errors))
		for i := range strict.Errors {
			out = append(out, fromDecodeError(file, &strict.Errors[i], qualify))
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return []*Error{fromDecodeError(file, de, qualify)}
	}
	return []*Error{{File: file, Msg: err.Error(), Err: err}}
}

func fromDecodeError(file string, de *toml.DecodeError, qualify func(int, string) string) *Error {
	line, _ := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	switch msg {
	case "unknown field":
		msg = "unknown key"
	case "missing table":
		msg = "unknown table"
	}
	key := strings.Join(de.Key(), ".")
	if qualify != nil {
		key = qualify(line, key)
	}
	return &Error{File: file, Line: line, Key: key, Msg: msg, Err: de}
}
