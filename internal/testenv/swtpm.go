package testenv

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// SWTPM starts a fresh swtpm (a software TPM 2.0) for one test, talking over
// a socketpair: no ports, and the state lives in t.TempDir. It returns the
// test's end of the connection; closing it ends swtpm. A missing swtpm
// fails the test: CI installs it (Debian packages swtpm, swtpm-tools).
func SWTPM(t testing.TB) *os.File {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (apt-get install -y swtpm swtpm-tools): %v", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(fds[0]), "swtpm")
	theirs := os.NewFile(uintptr(fds[1]), "swtpm-child")
	cmd := exec.Command(bin, "socket", "--tpm2", "-t", "--fd", "3",
		"--flags", "not-need-init,startup-clear", "--tpmstate", "dir="+t.TempDir())
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	theirs.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		ours.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return ours
}
