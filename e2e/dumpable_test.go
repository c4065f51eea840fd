// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestByokdNotDumpable checks from outside, through /proc, that an unlocked
// byokd running as an ordinary user is not dumpable. proc(5): the files in
// /proc/PID of a non-dumpable process belong to root, not to the process's
// user, so that user can no longer read its environment or memory. A plain
// process of the same user is the control: its files are its user's and
// readable by it.
func TestByokdNotDumpable(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root to run byokd as nobody (CI runs as root)")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	k := testenv.StartKP(t)
	root := k.RootKey(t, "dumpable-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Credential: nobody})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	// A served key: the data key and a derived one have been in byokd's memory.
	if _, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: "table:dumpable"}); err != nil {
		t.Fatalf("GetDataKey on the unlocked byokd: %v", err)
	}

	control := osexec.Command("sleep", "60")
	control.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	if err := control.Start(); err != nil {
		t.Fatalf("start the control process as uid %d: %v", nobody.Uid, err)
	}
	t.Cleanup(func() { _ = control.Process.Kill(); _ = control.Wait() })

	for _, p := range []struct {
		name string
		pid  int
	}{{"byokd", b.PID()}, {"control sleep", control.Process.Pid}} {
		if uid := realUID(t, p.pid); uid != nobody.Uid {
			t.Fatalf("%s (pid %d) runs as real uid %d, want %d: the ownership checks below would prove nothing", p.name, p.pid, uid, nobody.Uid)
		}
	}

	// byokd: root owns its /proc files and nobody, its own user, cannot read them.
	for _, f := range []string{"environ", "mem", "maps", "status"} {
		path := fmt.Sprintf("/proc/%d/%s", b.PID(), f)
		if uid, gid := procOwner(t, path); uid != 0 || gid != 0 {
			t.Fatalf("%s is owned by %d:%d, want 0:0: byokd (uid %d) is dumpable", path, uid, gid, nobody.Uid)
		}
	}
	byokdEnviron := fmt.Sprintf("/proc/%d/environ", b.PID())
	if err := readAs(nobody, byokdEnviron); err == nil {
		t.Fatalf("uid %d read %s: byokd's own user can read it, so byokd is dumpable", nobody.Uid, byokdEnviron)
	} else if !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("uid %d reading %s failed, but not with permission denied: %v", nobody.Uid, byokdEnviron, err)
	}

	// Control: the same user's plain process keeps its /proc files.
	controlEnviron := fmt.Sprintf("/proc/%d/environ", control.Process.Pid)
	if uid, gid := procOwner(t, controlEnviron); uid != nobody.Uid || gid != nobody.Gid {
		t.Fatalf("control: %s is owned by %d:%d, want %d:%d: /proc does not show dumpability here", controlEnviron, uid, gid, nobody.Uid, nobody.Gid)
	}
	if err := readAs(nobody, controlEnviron); err != nil {
		t.Fatalf("control: uid %d cannot read its own process's %s: %v", nobody.Uid, controlEnviron, err)
	}

	// The pid still names the same byokd: nothing above looked at a stranger.
	if exited, err := b.Exited(); exited {
		t.Fatalf("byokd exited during the test: %v", err)
	}
}

// realUID is the real uid in /proc/PID/status ("Uid: real effective saved fs").
func realUID(t *testing.T, pid int) uint32 {
	t.Helper()
	v, err := procStatus(pid, "Uid")
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		t.Fatalf("pid %d: empty Uid line", pid)
	}
	uid, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		t.Fatalf("pid %d: bad Uid line %q", pid, v)
	}
	return uint32(uid)
}

func procOwner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("stat %s: no owner", path)
	}
	return st.Uid, st.Gid
}

// readAs reads path in a child process running as cred. What it reads (an
// environment) is thrown away; only the error, with cat's message, returns.
func readAs(cred *syscall.Credential, path string) error {
	cmd := osexec.Command("cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return nil
}
