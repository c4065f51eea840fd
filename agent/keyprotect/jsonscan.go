// SPDX-License-Identifier: Apache-2.0

package keyprotect

import (
	"encoding/json"
	"errors"
)

// maxDepth bounds the nesting topFields follows.
const maxDepth = 32

var errJSON = errors.New("not a JSON object")

// topFields splits a JSON object into its members without copying their
// values: each value is a slice of b, so a value in locked memory stays
// there. Keys are decoded into Go strings (they never hold secrets). A key
// that appears twice is an error: byokd does not guess which one was meant.
func topFields(b []byte) (map[string][]byte, error) {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return nil, errJSON
	}
	out := map[string][]byte{}
	s.ws()
	if s.eat('}') {
		return out, s.end()
	}
	for {
		s.ws()
		from := s.i
		if !s.str() {
			return nil, errJSON
		}
		var key string
		if err := json.Unmarshal(b[from:s.i], &key); err != nil {
			return nil, errJSON
		}
		s.ws()
		if !s.eat(':') {
			return nil, errJSON
		}
		s.ws()
		from = s.i
		if !s.value(0) {
			return nil, errJSON
		}
		if _, dup := out[key]; dup {
			return nil, errors.New("a key appears twice")
		}
		out[key] = b[from:s.i]
		s.ws()
		if s.eat('}') {
			return out, s.end()
		}
		if !s.eat(',') {
			return nil, errJSON
		}
	}
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// str skips a string, escapes included.
func (s *scanner) str() bool {
	if !s.eat('"') {
		return false
	}
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return true
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if len(s.b)-s.i < 5 {
					return false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				s.i += 5
			default:
				return false
			}
		case c < 0x20:
			return false
		default:
			s.i++
		}
	}
	return false
}

// value skips one JSON value.
func (s *scanner) value(depth int) bool {
	if depth > maxDepth || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{' || c == '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		s.i++
		s.ws()
		if s.eat(closing) {
			return true
		}
		for {
			s.ws()
			if c == '{' {
				if !s.str() {
					return false
				}
				s.ws()
				if !s.eat(':') {
					return false
				}
				s.ws()
			}
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(closing) {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.number()
	}
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number skips a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.digits() == 0:
		return false
	}
	if s.eat('.') && s.digits() == 0 {
		return false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}
