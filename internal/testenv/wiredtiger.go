// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// WiredTigerLines are the WiredTiger lines the plugin supports: Debian's
// 3.2.1 for development, and the lines mongod 7.0 and 8.0 embed, built from
// the snapshots in ../shared/wiredtiger by scripts/wiredtiger.
var WiredTigerLines = []string{"3.2", "11.2", "11.3"}

// WiredTiger is one WiredTiger build with the tools the tests drive it with.
type WiredTiger struct {
	Line    string // "3.2", "11.2", "11.3"
	Lib     string // folder of libwiredtiger.so
	Include string // folder of wiredtiger.h and wiredtiger_ext.h
	WT      string // the wt utility
	Format  string // test/format's t, with the byokd encryptor; "" for 3.2
	Harness string // plugin/wiredtiger/testdata/harness.c built against it
	Mongod  string // plugin/wiredtiger/testdata/mongodlike.c built against it
}

// Command runs a program of this build (wt, t, the harness) with its library.
func (w *WiredTiger) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if w.Lib != "" {
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+w.Lib)
	}
	return cmd
}

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error

	linesMu sync.Mutex
	lines   = map[string]*WiredTiger{}
)

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Plugin builds the WiredTiger plugin (libbyokd-wiredtiger.so, one library
// for every supported line) once per test process, and returns the folder
// that holds it. The folder is world-readable: tests run databases as other
// users too.
func Plugin(t testing.TB) string {
	t.Helper()
	pluginOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			pluginErr = err
			return
		}
		if pluginDir, pluginErr = os.MkdirTemp("", "byokd-wt-"); pluginErr != nil {
			return
		}
		if pluginErr = os.Chmod(pluginDir, 0o755); pluginErr != nil {
			return
		}
		build := exec.Command("go", "build", "-buildmode=c-shared", "-o", filepath.Join(pluginDir, "libbyokd-wiredtiger.so"), "./plugin/wiredtiger")
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("build the plugin: %v\n%s", err, b)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginDir
}

// WiredTigerLine returns the WiredTiger of a supported line, built (or taken
// from scripts/wiredtiger's cache) and copied beside the plugin, with the
// harness built against it. 3.2 is Debian's libwiredtiger-dev. A missing
// snapshot or toolchain fails the test: CI has them.
func WiredTigerLine(t testing.TB, line string) *WiredTiger {
	t.Helper()
	dir := Plugin(t)
	linesMu.Lock()
	defer linesMu.Unlock()
	if w, ok := lines[line]; ok {
		return w
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	w := &WiredTiger{Line: line}
	if line == "3.2" {
		w.Include, w.WT = "/usr/include", "/usr/bin/wt"
	} else {
		cmd := exec.Command(filepath.Join(root, "scripts", "wiredtiger"), line)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("scripts/wiredtiger %s: %v\n%s", line, err, stderr.String())
		}
		// Copied out of the cache (under root's home) so that databases
		// run as other users load it too.
		w.Lib = filepath.Join(dir, "wt"+line)
		if b, err := exec.Command("cp", "-a", strings.TrimSpace(string(out)), w.Lib).CombinedOutput(); err != nil {
			t.Fatalf("copy WiredTiger %s: %v\n%s", line, err, b)
		}
		if err := filepath.Walk(w.Lib, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.IsDir() || fi.Mode()&0o100 != 0 {
				return os.Chmod(p, fi.Mode().Perm()|0o555)
			}
			return os.Chmod(p, fi.Mode().Perm()|0o444)
		}); err != nil {
			t.Fatal(err)
		}
		w.Include, w.WT, w.Format = filepath.Join(w.Lib, "include"), filepath.Join(w.Lib, "bin", "wt"), filepath.Join(w.Lib, "bin", "t")
		w.Lib = filepath.Join(w.Lib, "lib")
	}
	w.Harness = filepath.Join(dir, "harness-wt"+line)
	w.Mongod = filepath.Join(dir, "mongodlike-wt"+line)
	for _, prog := range []struct{ out, src string }{{w.Harness, "harness.c"}, {w.Mongod, "mongodlike.c"}} {
		args := []string{"-O2", "-Wall", "-I", w.Include, "-o", prog.out, "plugin/wiredtiger/testdata/" + prog.src}
		if w.Lib != "" {
			args = append(args, "-L", w.Lib, "-Wl,-rpath,"+w.Lib)
		}
		cc := exec.Command("cc", append(args, "-lwiredtiger")...)
		cc.Dir = root
		if b, err := cc.CombinedOutput(); err != nil {
			t.Fatalf("build %s for WiredTiger %s: %v\n%s", prog.src, line, err, b)
		}
	}
	lines[line] = w
	return w
}

// ModuleRoot is the folder of the module's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
