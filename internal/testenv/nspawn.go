// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Container is a Debian 12 container booted with systemd-nspawn, with a
// real systemd as its PID 1 (../shared/notes/systemd-nspawn.md has the
// recipe and its pitfalls). Commands run in it through nsenter.
type Container struct {
	Name string
	Root string // the container's root file system, on the host
	init int    // the container's systemd, as a host pid
	cmd  *exec.Cmd
	done chan struct{}
	logs *SyncBuffer
}

// repoRoot is the module's folder.
func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// RootFS builds (or finds in the cache) the container's root file system
// with scripts/systemd-rootfs and returns the .tar.zst's path.
func RootFS(t testing.TB) string {
	t.Helper()
	cmd := exec.Command("scripts/systemd-rootfs")
	cmd.Dir = repoRoot(t)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/systemd-rootfs: %v\n%s", err, errb.String())
	}
	return strings.TrimSpace(string(out))
}

// BootContainer unpacks the root file system, boots it and waits until
// systemd reports the system running. binds are host folders mounted read
// only in the container (host path → container path). The container is
// powered off and removed when the test ends.
func BootContainer(t testing.TB, binds map[string]string) *Container {
	t.Helper()
	for _, tool := range []string{"systemd-nspawn", "nsenter", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (apt-get install systemd-container zstd)", tool)
		}
	}
	tarball := RootFS(t)
	var r [4]byte
	_, _ = rand.Read(r[:])
	c := &Container{Name: "byokd-" + hex.EncodeToString(r[:]), done: make(chan struct{}), logs: &SyncBuffer{}}
	base, err := os.MkdirTemp("", "byokd-nspawn-")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last registered first: power off, then the cgroups,
	// then the files — each registered as soon as there is something to
	// undo, so that a failure on the way leaves nothing behind.
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	c.Root = filepath.Join(base, "root")
	if err := os.Mkdir(c.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "--zstd", "-xpf", tarball, "-C", c.Root).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tarball, err, out)
	}
	// Each container gets cgroups of its own (nspawn --keep-unit puts its
	// payload under the caller's), so that runs do not collide.
	var cgroups []string
	for _, h := range []string{"unified", "systemd"} {
		d := filepath.Join("/sys/fs/cgroup", h, c.Name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("cgroup for the container: %v", err)
		}
		t.Cleanup(func() { removeCgroup(d) })
		cgroups = append(cgroups, d)
	}
	args := []string{"-q", "-D", c.Root, "-M", c.Name, "--boot", "--register=no", "--keep-unit", "--console=pipe",
		"--private-network",
		// IPAddressDeny= needs BPF; mlock needs @memlock past nspawn's
		// own seccomp filter.
		"--system-call-filter=bpf @memlock", "--capability=CAP_BPF,CAP_IPC_LOCK"}
	for host, in := range binds {
		args = append(args, "--bind-ro="+host+":"+in)
	}
	script := `for cg in ` + strings.Join(cgroups, " ") + `; do echo $$ > "$cg/cgroup.procs"; done
exec setsid systemd-nspawn "$@"`
	c.cmd = exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	c.cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	c.cmd.Stdin = nil
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.poweroff()
		_ = os.RemoveAll("/run/systemd/nspawn/propagate/" + c.Name)
		if t.Failed() {
			t.Logf("container %s console:\n%s", c.Name, c.logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for c.init == 0 || !exists(fmt.Sprintf("/proc/%d/root/run/systemd/private", c.init)) {
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn ended while booting:\n%s", c.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container's systemd did not come up in 60 s:\n%s", c.logs.String())
		}
		if c.init == 0 {
			c.init = containerInit(c.cmd.Process.Pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := c.Run("systemctl", "is-system-running", "--wait"); err != nil && strings.TrimSpace(out) != "degraded" {
		t.Fatalf("systemctl is-system-running: %v: %s", err, out)
	} else if strings.TrimSpace(out) == "degraded" {
		failed, _ := c.Run("systemctl", "--failed", "--no-legend")
		t.Fatalf("the container booted degraded:\n%s", failed)
	}
	return c
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// removeCgroup removes a cgroup folder and the ones the container's
// systemd made under it, deepest first (a cgroup with children cannot go).
func removeCgroup(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
}

// containerInit finds the container's systemd: a child of the nspawn
// process (pid) running /usr/lib/systemd/systemd.
func containerInit(pid int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && exe == "/usr/lib/systemd/systemd" {
			return p
		}
	}
	return 0
}

// Run runs a command in the container (all its namespaces, as root) and
// returns its combined output.
func (c *Container) Run(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.init), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustRun is Run, failing the test when the command fails.
func (c *Container) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Run(args...)
	if err != nil {
		t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Sh runs a shell script in the container.
func (c *Container) Sh(t testing.TB, script string) string {
	t.Helper()
	return c.MustRun(t, "sh", "-ec", script)
}

// WriteFile writes a file into the container's file system with mode,
// owned by root.
func (c *Container) WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	host := filepath.Join(c.Root, path)
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(host, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(host, mode); err != nil {
		t.Fatal(err)
	}
}

// poweroff stops the container: systemctl poweroff, then SIGKILL if it has
// not ended in 30 s.
func (c *Container) poweroff() {
	if c.init != 0 {
		_, _ = c.Run("systemctl", "poweroff", "--no-block")
	}
	select {
	case <-c.done:
		return
	case <-time.After(30 * time.Second):
	}
	// The container's systemd first: killing nspawn alone would leave it.
	if c.init != 0 {
		_ = syscall.Kill(c.init, syscall.SIGKILL)
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// Packages builds the .deb and .rpm of this checkout for this machine's
// architecture with scripts/package, as version, into the folder dist.
func Packages(t testing.TB, version, dist string) {
	t.Helper()
	cmd := exec.Command("scripts/package")
	cmd.Dir = repoRoot(t)
	arch, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "VERSION="+version, "ARCHES="+strings.TrimSpace(string(arch)), "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package %s: %v\n%s", version, err, out)
	}
	if err := os.RemoveAll(filepath.Join(dist, "build")); err != nil {
		t.Fatal(err)
	}
}
