// SPDX-License-Identifier: Apache-2.0

package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// The schema check walks the TOML syntax tree next to the Go types of Config
// before anything is decoded. It exists because go-toml's decoder stops at
// the first wrong type, reports unknown keys only when nothing else failed,
// matches keys case-insensitively, and decodes the integer 10 into a
// Duration as ten nanoseconds. The check reports every unknown key and every
// wrong type in one run, and records the line of every key for the checks
// that run after decoding.

// lines maps a key path ("poll.interval", "lock_action[1].command",
// "socket.allowed_uids[0]", or a table such as "keyprotect") to its line.
type lines map[string]int

// of returns the line of key, or of the closest table holding it, or 0.
func (l lines) of(key string) int {
	for key != "" {
		if n, ok := l[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// has reports whether key itself is in the file.
func (l lines) has(key string) bool {
	_, ok := l[key]
	return ok
}

func (l lines) add(key string, line int) {
	if _, ok := l[key]; !ok {
		l[key] = line
	}
}

type checker struct {
	p      *unstable.Parser
	file   string
	lines  lines
	arrays map[string]int // elements seen so far of each array of tables
	tables []tableHeader  // in file order
	errs   []*Error
}

// tableHeader is a [table] or [[array table]] line and the path it opens.
type tableHeader struct {
	line int
	path string
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[Duration]()
	fileModeType        = reflect.TypeFor[FileMode]()
)

// check runs the schema check over data. A syntax error is returned as is;
// schema errors are in c.errs.
func check(file string, data []byte, root reflect.Type) (*checker, error) {
	c := &checker{p: &unstable.Parser{}, file: file, lines: lines{}, arrays: map[string]int{}}
	c.p.Reset(data)
	t, prefix, ok := root, "", true
	for c.p.NextExpression() {
		e := c.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			t, prefix, ok = c.header(root, e)
			if ok {
				c.tables = append(c.tables, tableHeader{line: c.line(e.Child(), 0), path: prefix})
			}
		case unstable.KeyValue:
			// Keys under an unknown table were reported with the table.
			if ok {
				c.keyValue(prefix, t, e)
			}
		}
	}
	return c, c.p.Error()
}

// qualify completes the key of an error go-toml's decoder found at line. The
// decoder names a key defined twice relative to its table ("timeout"), so
// qualify prefixes the table open at that line ("keyprotect.timeout").
func (c *checker) qualify(line int, key string) string {
	if key == "" || c.lines.has(key) {
		return key
	}
	prefix := ""
	for _, t := range c.tables {
		if t.line >= line {
			break
		}
		prefix = t.path
	}
	if prefix == "" || strings.HasPrefix(key, prefix+".") {
		return key
	}
	return prefix + "." + key
}

func (c *checker) fail(line int, key, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line where n starts, or fallback when the parser did not
// record where n is (it does not for arrays).
func (c *checker) line(n *unstable.Node, fallback int) int {
	if n.Raw.Length == 0 {
		return fallback
	}
	return c.p.Shape(n.Raw).Start.Line
}

func keyParts(n *unstable.Node) (parts []string, first *unstable.Node) {
	it := n.Key()
	for it.Next() {
		if first == nil {
			first = it.Node()
		}
		parts = append(parts, string(it.Node().Data))
	}
	return parts, first
}

// header enters a [table] or [[array table]] and returns its type and path;
// ok is false when the table is not in the schema.
func (c *checker) header(root reflect.Type, e *unstable.Node) (table reflect.Type, path string, ok bool) {
	parts, first := keyParts(e)
	line := c.line(first, 0)
	table = root
	for i, name := range parts {
		last := i == len(parts)-1
		p := join(path, name)
		f, found := field(table, name)
		if !found {
			c.fail(line, p, "unknown table")
			return nil, "", false
		}
		t := f.Type
		switch {
		case isTable(t):
			if last && e.Kind == unstable.ArrayTable {
				c.fail(line, p, "must be a table [%s], not an array of tables [[%s]]", p, p)
				return nil, "", false
			}
			table, path = t, p
		case isTableArray(t):
			n := c.arrays[p]
			if last {
				if e.Kind == unstable.Table {
					c.fail(line, p, "must be an array of tables [[%s]], not a table [%s]", p, p)
					return nil, "", false
				}
				c.arrays[p] = n + 1
			} else {
				// [a.b] under [[a]] extends the last element of a.
				if n == 0 {
					c.fail(line, p, "no [[%s]] before [%s]", p, strings.Join(parts, "."))
					return nil, "", false
				}
				n--
			}
			table, path = t.Elem(), fmt.Sprintf("%s[%d]", p, n)
		default:
			c.fail(line, p, "must be %s, not a table", want(t))
			return nil, "", false
		}
		c.lines.add(path, line)
	}
	return table, path, true
}

// keyValue checks key = value, whose (possibly dotted) key is relative to the
// table at prefix.
func (c *checker) keyValue(prefix string, table reflect.Type, e *unstable.Node) {
	parts, first := keyParts(e)
	line := c.line(first, 0)
	path := prefix
	for i, name := range parts {
		p := join(path, name)
		f, found := field(table, name)
		if !found {
			c.fail(line, p, "unknown key%s", hint(name))
			return
		}
		if i == len(parts)-1 {
			c.lines.add(p, line)
			c.value(p, f.Type, e.Value(), line)
			return
		}
		if !isTable(f.Type) {
			c.fail(line, p, "must be %s, not a table", want(f.Type))
			return
		}
		c.lines.add(p, line)
		table, path = f.Type, p
	}
}

// value checks that v can be decoded into a Go value of type t.
func (c *checker) value(path string, t reflect.Type, v *unstable.Node, line int) {
	mismatch := func() { c.fail(line, path, "must be %s, not %s", want(t), got(v.Kind)) }
	if isText(t) {
		if v.Kind != unstable.String {
			mismatch()
			return
		}
		u := reflect.New(t).Interface().(encoding.TextUnmarshaler)
		if err := u.UnmarshalText(v.Data); err != nil {
			c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: path, Msg: err.Error(), Err: err})
		}
		return
	}
	ok := false
	switch t.Kind() {
	case reflect.String:
		ok = v.Kind == unstable.String
	case reflect.Bool:
		ok = v.Kind == unstable.Bool
	case reflect.Float64:
		ok = v.Kind == unstable.Float || v.Kind == unstable.Integer
	case reflect.Int:
		ok = v.Kind == unstable.Integer
	case reflect.Struct:
		if ok = v.Kind == unstable.InlineTable; ok {
			c.inline(path, t, v)
		}
	case reflect.Slice:
		if ok = v.Kind == unstable.Array; ok {
			c.array(path, t.Elem(), v, line)
		}
	}
	if !ok {
		mismatch()
	}
}

func (c *checker) array(path string, elem reflect.Type, v *unstable.Node, line int) {
	it := v.Children()
	i := 0
	for it.Next() {
		n := it.Node()
		if n.Kind == unstable.Comment {
			continue
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		l := c.line(n, line)
		c.lines.add(p, l)
		c.value(p, elem, n, l)
		i++
	}
}

func (c *checker) inline(path string, table reflect.Type, v *unstable.Node) {
	it := v.Children()
	for it.Next() {
		if n := it.Node(); n.Kind == unstable.KeyValue {
			c.keyValue(path, table, n)
		}
	}
}

// field finds the field of struct t tagged toml:"name". Unlike go-toml's
// decoder it does not fall back to a case-insensitive match: Cluster_ID is
// not cluster_id.
func field(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && tomlKey(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// tomlKey is the TOML key of a field: its tag without options such as
// omitempty, which only Marshal uses.
func tomlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func isText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshalerType) }

func isTable(t reflect.Type) bool { return t.Kind() == reflect.Struct && !isText(t) }

func isTableArray(t reflect.Type) bool { return t.Kind() == reflect.Slice && isTable(t.Elem()) }

// want describes what a value of Go type t looks like in TOML.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration string such as "15s"`
	case t == fileModeType:
		return `an octal string such as "0660"`
	case isText(t), t.Kind() == reflect.String:
		return "a string"
	case isTable(t):
		return "a table"
	case isTableArray(t):
		return "an array of tables"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Float64:
		return "a number"
	case reflect.Int:
		return "an integer"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return "an array of strings"
		case reflect.Int:
			return "an array of integers"
		}
		return "an array"
	}
	return t.String()
}

// got names a TOML value kind.
func got(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Bool:
		return "a boolean"
	case unstable.Float:
		return "a float"
	case unstable.Integer:
		return "an integer"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "an inline table"
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return "a date or time"
	}
	return strings.ToLower(k.String())
}

// hint adds advice to an unknown key that looks like an attempt to put the
// API key itself in the file. The value is never echoed.
func hint(name string) string {
	switch strings.ToLower(strings.ReplaceAll(name, "-", "_")) {
	case "api_key", "apikey", "iam_api_key", "ibmcloud_api_key":
		return " (the API key is never read from this file: set keyprotect.api_key_file, or pass the systemd credential kp-apikey)"
	}
	return ""
}
