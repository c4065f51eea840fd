// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// licenceComment is the comment marker of the source files that carry the
// project's SPDX licence line; "" for files that are not source (data,
// configs, fuzz corpora, docs).
func licenceComment(path string) string {
	switch {
	case strings.Contains(path, "/testdata/fuzz/"):
		return ""
	case regexp.MustCompile(`\.(go|s|c|h|proto)$`).MatchString(path):
		return "//"
	case path == "Makefile", path == ".ci/run", strings.HasPrefix(path, "scripts/"),
		strings.HasPrefix(path, "packaging/scripts/"), strings.HasSuffix(path, ".bash"):
		return "#"
	}
	return ""
}

// TestEverySourceFileHasALicenceLine: every source file git tracks opens
// with "SPDX-License-Identifier: Apache-2.0" (after a #! line), generated
// code included (the .proto's line is carried into it).
func TestEverySourceFileHasALicenceLine(t *testing.T) {
	cmd := exec.Command("git", "ls-files")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	checked := 0
	for _, f := range strings.Fields(string(out)) {
		c := licenceComment(f)
		if c == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("..", f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 3)
		first := lines[0]
		if strings.HasPrefix(first, "#!") && len(lines) > 1 {
			first = lines[1]
		}
		if first != c+" SPDX-License-Identifier: Apache-2.0" {
			t.Errorf("%s: first line %q, want %q", f, first, c+" SPDX-License-Identifier: Apache-2.0")
		}
		checked++
	}
	if checked < 100 {
		t.Fatalf("only %d source files checked", checked)
	}
}
