// SPDX-License-Identifier: Apache-2.0

package config

import (
	"encoding"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The configuration reference, docs/configuration.md, lists every key in
// the tables of its section "## Every key": the key, its default and what
// it does. These tests keep it in step with Config and defaults().

const referenceDoc = "../../docs/configuration.md"

// schemaKey is a leaf key of the schema with its default: the value of
// defaults(), or for a key of an array of tables, of an element that
// leaves it out.
type schemaKey struct {
	path  string // "poll.interval", "lock_action.timeout"
	field []int  // index path from Config, or from the element type
	def   reflect.Value
}

func schemaKeysWithDefaults() []schemaKey {
	var out []schemaKey
	var walk func(v reflect.Value, prefix string, index []int)
	walk = func(v reflect.Value, prefix string, index []int) {
		for i := range v.NumField() {
			f, fv := v.Type().Field(i), v.Field(i)
			path := join(prefix, tomlKey(f))
			idx := append(append([]int(nil), index...), i)
			switch {
			case isTable(f.Type):
				walk(fv, path, idx)
			case isTableArray(f.Type):
				// An element's defaults are what Parse fills in.
				elem := reflect.New(f.Type.Elem()).Elem()
				if f.Type.Elem() == reflect.TypeFor[LockAction]() {
					elem.Set(reflect.ValueOf(LockAction{Timeout: defaultLockActionTimeout}))
				}
				walk(elem, path, nil)
			default:
				out = append(out, schemaKey{path: path, field: idx, def: fv})
			}
		}
	}
	walk(reflect.ValueOf(*defaults()), "", nil)
	return out
}

// tomlValue writes v as the reference writes a default: TOML with double
// quotes, durations and modes as their strings.
func tomlValue(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err != nil {
			panic(err)
		}
		return strconv.Quote(string(b))
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Slice:
		var elems []string
		for i := range v.Len() {
			elems = append(elems, tomlValue(v.Index(i)))
		}
		return "[" + strings.Join(elems, ", ") + "]"
	}
	panic(fmt.Sprintf("no TOML form for %s", v.Type()))
}

// referenceRow is a row of a table of "## Every key".
type referenceRow struct {
	line             int
	key, deflt, what string
}

var keyCell = regexp.MustCompile("^`([a-z_.]+)`$")

// referenceRows reads the tables of the section "## Every key".
func referenceRows(t *testing.T, doc string) []referenceRow {
	t.Helper()
	var rows []referenceRow
	in := false
	for i, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Every key"
			continue
		case !in || !strings.HasPrefix(line, "|"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		if cells[0] == "key" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		m := keyCell.FindStringSubmatch(cells[0])
		if m == nil || len(cells) != 3 || cells[1] == "" || cells[2] == "" {
			t.Errorf("%s:%d: a row of \"## Every key\" is | `key` | default | what |, got %q", referenceDoc, i+1, line)
			continue
		}
		rows = append(rows, referenceRow{line: i + 1, key: m[1], deflt: cells[1], what: cells[2]})
	}
	if rows == nil {
		t.Errorf("%s has no section \"## Every key\" with a table of keys", referenceDoc)
	}
	return rows
}

func readReference(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.FromSlash(referenceDoc))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestReferenceListsEveryKeyWithItsDefault: every key the schema accepts
// has a row in the reference, every row is a key of the schema, once, and
// its default is the code's: a value in backticks is the default, "required"
// is a key without one that Parse requires, and words (such as "none") are
// for a key whose default is empty.
func TestReferenceListsEveryKeyWithItsDefault(t *testing.T) {
	noCredentials(t)
	rows := referenceRows(t, readReference(t))
	byKey := map[string]referenceRow{}
	for _, r := range rows {
		if _, dup := byKey[r.key]; dup {
			t.Errorf("%s:%d: %s is listed twice", referenceDoc, r.line, r.key)
		}
		byKey[r.key] = r
	}
	schema := map[string]bool{}
	for _, k := range schemaKeysWithDefaults() {
		schema[k.path] = true
		r, ok := byKey[k.path]
		if !ok {
			t.Errorf("%s does not list %s (default %s)", referenceDoc, k.path, tomlValue(k.def))
			continue
		}
		empty := k.def.IsZero() || (k.def.Kind() == reflect.Slice && k.def.Len() == 0)
		switch {
		case strings.HasPrefix(r.deflt, "`"):
			if want := "`" + tomlValue(k.def) + "`"; r.deflt != want {
				t.Errorf("%s:%d: %s defaults to %s, not %s", referenceDoc, r.line, k.path, want, r.deflt)
			}
		case r.deflt == "required":
			if !empty {
				t.Errorf("%s:%d: %s is listed as required, but defaults to %s", referenceDoc, r.line, k.path, tomlValue(k.def))
			} else if !requiredByParse(t, k) {
				t.Errorf("%s:%d: %s is listed as required, but Parse accepts a file without it", referenceDoc, r.line, k.path)
			}
		case !empty:
			t.Errorf("%s:%d: %s defaults to %s; write it as `%s`, not %q", referenceDoc, r.line, k.path,
				tomlValue(k.def), tomlValue(k.def), r.deflt)
		}
	}
	for _, r := range rows {
		if !schema[r.key] {
			t.Errorf("%s:%d: %s is not a key byokd accepts", referenceDoc, r.line, r.key)
		}
	}
}

// requiredByParse reports whether Parse refuses a valid configuration with
// k emptied, naming k.
func requiredByParse(t *testing.T, k schemaKey) bool {
	t.Helper()
	valid, err := Parse("config.toml", []byte(minimal+"[[lock_action]]\ncommand = [\"/bin/true\"]\n[[unlock_action]]\ncommand = [\"/bin/true\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(valid).Elem()
	path := k.path
	for table, field := range map[string]string{"lock_action": "LockActions", "unlock_action": "UnlockActions"} {
		if strings.HasPrefix(k.path, table+".") {
			v = v.FieldByName(field).Index(0)
			path = strings.Replace(k.path, table+".", table+"[0].", 1)
		}
	}
	f := v.FieldByIndex(k.field)
	f.Set(reflect.Zero(f.Type()))
	data, err := Marshal(valid)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("config.toml", data)
	return err != nil && (strings.Contains(err.Error(), " "+path+": required") || strings.Contains(err.Error(), " "+path+": must not be empty"))
}

// Every key the reference names anywhere, as `table.key`, is one.
func TestReferenceNamesOnlyKeysThatExist(t *testing.T) {
	doc := readReference(t)
	schema := map[string]bool{}
	tables := map[string]bool{}
	for _, k := range schemaKeysWithDefaults() {
		schema[k.path] = true
		if table, _, ok := strings.Cut(k.path, "."); ok {
			tables[table] = true
		}
	}
	mention := regexp.MustCompile("`\\[{0,2}([a-z_]+)\\]{0,2}\\.([a-z_]+)")
	for i, line := range strings.Split(doc, "\n") {
		for _, m := range mention.FindAllStringSubmatch(line, -1) {
			if tables[m[1]] && !schema[m[1]+"."+m[2]] {
				t.Errorf("%s:%d: %s.%s is not a key byokd accepts", referenceDoc, i+1, m[1], m[2])
			}
		}
	}
}
