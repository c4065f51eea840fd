// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SWTPM is a running swtpm, a software TPM 2.0, private to one test.
type SWTPM struct {
	// Conn is the command channel: raw TPM 2.0 commands in, responses out,
	// as a byte stream (a response may arrive in several reads). Closing
	// it makes swtpm exit.
	Conn *os.File

	ctrlMu sync.Mutex
	ctrl   *os.File
	cmd    *exec.Cmd
	done   chan struct{}
}

// swtpmArgs is the swtpm command line StartSWTPM runs, without the program
// name: fd 3 is the command channel and fd 4 the control channel, each one
// end of a socketpair, so no port or path is involved and swtpm exits when
// the test's ends close. The TPM is manufactured in state dir on first use
// and started (TPM2_Startup(CLEAR)) by swtpm itself.
func swtpmArgs(stateDir string) []string {
	return []string{"socket", "--tpm2",
		"--fd", "3", // top level --fd: "--server type=unixio,fd=3" spins at 100% CPU
		"--ctrl", "type=unixio,clientfd=4",
		"--flags", "not-need-init,startup-clear",
		"--tpmstate", "dir=" + stateDir,
	}
}

// StartSWTPM starts a fresh swtpm for one test, with its state in a
// t.TempDir, and stops it with t.Cleanup. A missing swtpm binary fails the
// test, never skips it: CI installs the Debian packages swtpm and
// swtpm-tools.
func StartSWTPM(t testing.TB) *SWTPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (Debian: apt-get install -y swtpm swtpm-tools): %v", err)
	}
	conn, connChild := socketpair(t, "swtpm-cmd")
	ctrl, ctrlChild := socketpair(t, "swtpm-ctrl")
	cmd := exec.Command(bin, swtpmArgs(t.TempDir())...)
	cmd.ExtraFiles = []*os.File{connChild, ctrlChild} // fds 3 and 4
	var stderr cappedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		conn.Close()
		ctrl.Close()
		connChild.Close()
		ctrlChild.Close()
		t.Fatalf("start swtpm: %v", err)
	}
	connChild.Close()
	ctrlChild.Close()
	s := &SWTPM{Conn: conn, ctrl: ctrl, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("swtpm stderr:\n%s", stderr.String())
		}
	})
	return s
}

func socketpair(t testing.TB, name string) (ours, theirs *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair for swtpm: %v", err)
	}
	// Our end non-blocking, so that os.NewFile gives a pollable file that
	// supports deadlines; swtpm's end stays blocking.
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatalf("socketpair for swtpm: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name+"-child")
}

// Control channel commands (swtpm's tpm_ioctl.h, PTM_*/CMD_*): a command is
// a big-endian uint32 code and its input; the answer starts with a
// big-endian uint32 result, 0 for success.
const (
	ctrlInit = 0x02 // CMD_INIT: TPM_Init, input uint32 flags
)

// Reset does to the TPM what a host reset does: TPM_Init through the
// control channel, then TPM2_Startup(CLEAR) on Conn, as firmware would
// (swtpm sends startup-clear only when it starts). Transient objects and
// sessions are gone afterwards and the TPM's reset count goes up; Conn
// stays open. The caller must not have a command in flight on Conn.
func (s *SWTPM) Reset() error {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], ctrlInit)
	binary.BigEndian.PutUint32(req[4:], 0) // no PTM_INIT_FLAG_DELETE_VOLATILE
	var rsp [4]byte
	if err := exchange(s.ctrl, req[:], rsp[:]); err != nil {
		return fmt.Errorf("swtpm CMD_INIT: %w", err)
	}
	if rc := binary.BigEndian.Uint32(rsp[:]); rc != 0 {
		return fmt.Errorf("swtpm CMD_INIT: result %#x", rc)
	}
	// TPM2_Startup(TPM_SU_CLEAR): tag TPM_ST_NO_SESSIONS, size 12,
	// TPM_CC_Startup, TPM_SU_CLEAR.
	startup := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0}
	var hdr [10]byte
	if err := exchange(s.Conn, startup, hdr[:]); err != nil {
		return fmt.Errorf("tpm2_startup: %w", err)
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		return fmt.Errorf("tpm2_startup: response code %#x", rc)
	}
	return nil
}

// exchange writes req and reads exactly len(rsp) bytes back, within 10 s.
func exchange(f *os.File, req, rsp []byte) error {
	if err := f.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	defer f.SetDeadline(time.Time{})
	if _, err := f.Write(req); err != nil {
		return err
	}
	_, err := io.ReadFull(f, rsp)
	return err
}

// Kill ends swtpm with SIGKILL, as a crash would, and waits for it; Conn
// stays open, so the next command on it fails.
func (s *SWTPM) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Pause stops swtpm with SIGSTOP, as a TPM that hangs: commands sent to it
// wait for an answer until Resume.
func (s *SWTPM) Pause() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused swtpm go on (SIGCONT).
func (s *SWTPM) Resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop closes both channels, which makes swtpm exit, and waits for it
// (killing it after 5 s). Calling Stop twice is harmless; t.Cleanup calls
// it too.
func (s *SWTPM) Stop() {
	_ = s.Resume()
	s.Conn.Close()
	s.ctrlMu.Lock()
	s.ctrl.Close()
	s.ctrlMu.Unlock()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// cappedBuffer keeps what is written to it until it holds 64 KiB, for a
// process's stderr that another goroutine reads.
type cappedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *cappedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 64<<10 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

func (l *cappedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.b)
}

func (l *cappedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
