// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/byokd/byokd/"

// deps lists every package pkg links (go list -deps; tests' own imports
// are not linked into anything shipped, so they are not counted): on this
// machine and for linux/s390x, where the sealers differ, each with cgo on
// (the plugin) and off (byokd and byokctl, as scripts/package builds them).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	var all []string
	for _, arch := range []string{"", "s390x"} {
		for _, cgo := range []string{"0", "1"} {
			if cgo == "0" && pkg == "./plugin/wiredtiger" {
				continue // a cgo library: nothing to build without cgo
			}
			cmd := exec.Command("go", "list", "-deps", pkg)
			cmd.Dir = ".."
			cmd.Env = append(cmd.Environ(), "CGO_ENABLED="+cgo) // go list needs no C compiler
			if arch != "" {
				cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+arch)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps %s (GOARCH=%s CGO_ENABLED=%s): %v", pkg, arch, cgo, err)
			}
			all = append(all, strings.Fields(string(out))...)
		}
	}
	return all
}

// TestDependencies keeps the binaries' dependencies from drifting (in the
// manner of tailscale's deps_test.go): the production daemon links no
// emulator; the CLI and the plugin in the database process link nothing of
// the daemon, Key Protect, the sealers or Prometheus; crypto/ depends on
// nothing in agent/.
func TestDependencies(t *testing.T) {
	forbidden := map[string][]string{
		"./cmd/byokd": {mod + "kpemu", mod + "cmd/"},
		"./cmd/byokctl": {mod + "agent/daemon", mod + "agent/node", mod + "agent/keyprotect", mod + "agent/keymgr", mod + "agent/server",
			mod + "crypto/seal", mod + "kpemu", "github.com/prometheus/", "github.com/IBM/keyprotect-go-client", "github.com/google/go-tpm"},
		"./plugin/wiredtiger": {mod + "agent/", mod + "crypto/seal", mod + "kpemu", "github.com/prometheus/",
			"github.com/IBM/keyprotect-go-client", "github.com/google/go-tpm", "github.com/pelletier/go-toml"},
		"./crypto/...": {mod + "agent/", mod + "kpemu", mod + "cmd/"},
		"./client/...": {mod + "agent/", mod + "crypto/", mod + "kpemu"},
		"./version":    {mod, "github.com/", "google.golang.org/", "golang.org/"},
	}
	for pkg, bad := range forbidden {
		ds := deps(t, pkg)
		self := mod + strings.TrimPrefix(pkg, "./")
		for _, d := range ds {
			if d == self || strings.HasSuffix(self, "/...") && strings.HasPrefix(d, strings.TrimSuffix(self, "...")) {
				continue
			}
			for _, b := range bad {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s links %s", pkg, d)
				}
			}
		}
		if strings.HasPrefix(pkg, "./cmd/") || pkg == "./plugin/wiredtiger" {
			t.Logf("%s links %d packages (this machine's and linux/s390x's together)", pkg, unique(ds))
		}
	}
}

func unique(s []string) int {
	m := map[string]bool{}
	for _, x := range s {
		m[x] = true
	}
	return len(m)
}
