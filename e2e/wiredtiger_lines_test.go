// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestWiredTigerLayouts compiles plugin/wiredtiger/layout.h's table against
// each supported line's own wiredtiger.h: every slot the plugin calls and
// every signature it relies on must be what that line has.
func TestWiredTigerLayouts(t *testing.T) {
	root := testenv.ModuleRoot(t)
	eachLine(t, func(t *testing.T, line string) {
		wt := testenv.WiredTigerLine(t, line)
		probe := filepath.Join(t.TempDir(), "probe")
		cc := exec.Command("cc", "-Wall", "-Werror", "-I", wt.Include, "-o", probe, "plugin/wiredtiger/testdata/layout_probe.c")
		cc.Dir = root
		if out, err := cc.CombinedOutput(); err != nil {
			t.Fatalf("layout.h against WiredTiger %s's headers: %v\n%s", line, err, out)
		}
		out, err := exec.Command(probe).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "WiredTiger "+line+" ") {
			t.Fatalf("layout.h against WiredTiger %s: %v\n%s", line, err, out)
		}
		t.Logf("%s", strings.TrimSpace(string(out)))
	})
}

// TestWiredTigerPluginChecksTheLine loads the plugin into a fake WiredTiger
// whose connection aborts on any method but the two the plugin may call for
// the line it claims to be: a line the plugin does not support, or one it
// cannot identify, is refused with a message naming the versions, and no
// method is called; a supported line found only by its version string (as in
// a mongod that links WiredTiger statically) is served through that line's
// slots.
func TestWiredTigerPluginChecksTheLine(t *testing.T) {
	root := testenv.ModuleRoot(t)
	lib := filepath.Join(testenv.Plugin(t), "libbyokd-wiredtiger.so")
	k := testenv.StartKP(t)
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: k.RootKey(t, "line-root"), Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"exported 11.4", []string{`-DEXPORTED="11.4.0"`, "-rdynamic"},
			[]string{"init returned 95", "supports WiredTiger 3.2 (development), 11.2 (mongod 7.0), 11.3 (mongod 8.0); it was loaded into WiredTiger 11.4.0 (from wiredtiger_version)"}},
		{"exported 3.0", []string{`-DEXPORTED="3.0.0"`, "-rdynamic"},
			[]string{"init returned 95", "it was loaded into WiredTiger 3.0.0"}},
		{"string 11.4", []string{`-DSTRING="WiredTiger 11.4.1: (January 1, 2027)"`},
			[]string{"init returned 95", "it was loaded into WiredTiger 11.4.1 (from its version string)"}},
		{"two strings", []string{`-DSTRING="WiredTiger 11.3.0: (x)"`, `-DSTRING2="WiredTiger 11.2.0: (y)"`},
			[]string{"init returned 95", "cannot tell which WiredTiger loaded it"}},
		{"no version", nil,
			[]string{"init returned 95", "cannot tell which WiredTiger loaded it"}},
		{"string 11.3", []string{`-DSTRING="WiredTiger 11.3.0: (December 1, 2026)"`},
			[]string{"add_encryptor byokd", "init returned 0"}},
		// Another library in the process exports wiredtiger_version (11.2):
		// the plugin asks the object that holds the connection's code.
		{"string 11.3, another library's 11.2", []string{`-DSTRING="WiredTiger 11.3.0: (December 1, 2026)"`, "-DOTHER"},
			[]string{"add_encryptor byokd", "init returned 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := filepath.Join(t.TempDir(), "fakehost")
			args := append([]string{"-Wall", "-o", host}, tc.flags...)
			cc := exec.Command("cc", append(args, "plugin/wiredtiger/testdata/fakehost.c")...)
			cc.Dir = root
			if out, err := cc.CombinedOutput(); err != nil {
				t.Fatalf("build the fake host: %v\n%s", err, out)
			}
			run := exec.Command(host, lib)
			run.Env = append(run.Environ(), "FAKEHOST_SOCKET="+b.Socket)
			if slices.Contains(tc.flags, "-DOTHER") {
				other := filepath.Join(t.TempDir(), "libother.so")
				cc := exec.Command("cc", "-Wall", "-shared", "-fPIC", "-DOTHER_LIB", "-o", other, "plugin/wiredtiger/testdata/fakehost.c")
				cc.Dir = root
				if out, err := cc.CombinedOutput(); err != nil {
					t.Fatalf("build the other library: %v\n%s", err, out)
				}
				run.Env = append(run.Env, "FAKEHOST_OTHER="+other)
			}
			out, err := run.CombinedOutput()
			if err != nil {
				t.Fatalf("fake host: %v (a crash means the plugin touched the connection)\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("missing %q in:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "must not") {
				t.Errorf("the plugin called a method it must not:\n%s", out)
			}
		})
	}
}
