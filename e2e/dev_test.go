// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
)

// devRun starts bin/byokd-dev (what `make run` runs) on dir and returns
// its banner, once printed; it is stopped with SIGINT when the test ends or
// when stop is called.
func devRun(t *testing.T, dir string) (banner string, stop func()) {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.Binaries(t), "byokd-dev"), "--dev-dir", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("byokd-dev did not stop cleanly: %v\n%s", err, logs.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("byokd-dev did not stop on SIGINT\n%s", logs.String())
		}
	}
	t.Cleanup(stop)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Stop with Ctrl-C.") {
				lines <- b.String()
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		close(lines)
	}()
	select {
	case banner, ok := <-lines:
		if !ok {
			t.Fatalf("byokd-dev ended without its banner\n%s", logs.String())
		}
		return banner, stop
	case <-time.After(30 * time.Second):
		t.Fatalf("no banner from byokd-dev in 30 s\n%s", logs.String())
	}
	return "", stop
}

// TestDevRun: `make run` (bin/byokd-dev) comes up with nothing configured:
// it prints where everything is, keeps it all in the dev folder, serves
// keys, locks and unlocks when the emulator's root key is disabled and
// enabled with the commands it prints, and finds its root key again after
// a restart.
func TestDevRun(t *testing.T) {
	// The production daemon has no dev mode, and says where it went.
	if out, err := exec.Command(filepath.Join(testenv.Binaries(t), "byokd"), "--dev").CombinedOutput(); err == nil || !strings.Contains(string(out), "bin/byokd-dev") {
		t.Fatalf("byokd --dev: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), ".dev")
	banner, stop := devRun(t, dir)
	for _, want := range []string{"byokd-dev is running. Everything lives in " + dir + "/", "Key Protect emulator  http://127.0.0.1:",
		"key provider socket   " + filepath.Join(dir, "keyprovider.sock"), "bin/byokctl status", "bin/kpemu ctl disable"} {
		if !strings.Contains(banner, want) {
			t.Fatalf("the banner lacks %q:\n%s", want, banner)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, want := range []string{"apikey", "byokd.toml", "keyprovider.sock", "kmip", "kpemu-state.json", "kpemu.env", "state"} {
		if !slices.Contains(names, want) {
			t.Fatalf("the dev folder holds %v, not %s", names, want)
		}
	}
	bins := testenv.Binaries(t)
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bins, "byokctl"), append([]string{"--socket", filepath.Join(dir, "keyprovider.sock")}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("byokctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	kpctl := func(action string) {
		t.Helper()
		// The commands the banner prints: . .dev/kpemu.env; bin/kpemu ctl ACTION.
		sh := exec.Command("sh", "-c", `. "$1" && exec "$2" ctl "$3"`, "sh", filepath.Join(dir, "kpemu.env"), filepath.Join(bins, "kpemu"), action)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("kpemu ctl %s: %v\n%s", action, err, out)
		}
	}
	ctl("wait", "--unlocked", "--timeout", "10s")
	if _, err := os.Stat(filepath.Join(dir, "state", "dek.json")); err != nil {
		t.Fatalf("no wrapped key in the dev folder: %v", err)
	}
	// KMIP, as the banner says: . .dev/kmip.env, then any KMIP client
	// (PyKMIP here) reaches the dev node; the file appears once the port
	// answers.
	for _, want := range []string{"KMIP server           127.0.0.1:", ". " + dir + "/kmip.env", "pykmip_driver.py"} {
		if !strings.Contains(banner, want) {
			t.Fatalf("the banner lacks %q:\n%s", want, banner)
		}
	}
	envFile := filepath.Join(dir, "kmip.env")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no kmip.env 10 s after the banner")
		}
	}
	sh := exec.Command("sh", "-c", `. "$1" && for v in KMIP_HOST KMIP_PORT KMIP_CA KMIP_CLIENT_CERT KMIP_CLIENT_KEY; do eval "test -n \"\$$v\"" || exit 9; done && exec /usr/bin/python3 testdata/pykmip_driver.py create dev-demo get @ state @`,
		"sh", envFile)
	sh.Env = append(os.Environ(), "_PYKMIP_DRIVER_REEXEC=1")
	out, err := sh.CombinedOutput()
	if err != nil || strings.Count(string(out), `"ok": true`) != 3 || !strings.Contains(string(out), `"PRE_ACTIVE"`) {
		t.Fatalf("PyKMIP with .dev/kmip.env: %v\n%s", err, out)
	}
	before := ctl("status", "--json")
	kpctl("disable")
	// The banner promises a lock within 2 s (the poll interval).
	deadline := time.Now().Add(5 * time.Second)
	for s := ctl("status", "--json"); !strings.Contains(s, `"state":"LOCKED"`); s = ctl("status", "--json") {
		if time.Now().After(deadline) {
			t.Fatalf("not locked 5 s after the disable: %s", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	kpctl("enable")
	ctl("wait", "--unlocked", "--timeout", "10s")
	stop()

	// A second start reuses the folder: the same root key and data key.
	banner2, _ := devRun(t, dir)
	rootOf := func(s string) string {
		i := strings.Index(s, "(root key ")
		if i < 0 {
			t.Fatalf("no root key in %q", s)
		}
		return s[i : i+strings.Index(s[i:], ")")]
	}
	if rootOf(banner2) != rootOf(banner) {
		t.Fatalf("a restart changed the root key: %s, then %s", rootOf(banner), rootOf(banner2))
	}
	ctl("wait", "--unlocked", "--timeout", "10s")
	fp := func(s string) string {
		i := strings.Index(s, `"key_fingerprint":"`)
		if i < 0 {
			t.Fatalf("no fingerprint in %s", s)
		}
		return s[i : i+40]
	}
	if after := ctl("status", "--json"); fp(after) != fp(before) {
		t.Fatalf("a restart changed the data key: %s, then %s", fp(before), fp(after))
	}
}
