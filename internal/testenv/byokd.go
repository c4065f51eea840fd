// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/client/keyprovider"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds byokd, byokd-dev, byokctl and kpemu once per test process and returns
// the folder holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		binDir, buildErr = os.MkdirTemp("", "byokd-bin-")
		if buildErr != nil {
			return
		}
		// Tests run byokctl as other users.
		if buildErr = os.Chmod(binDir, 0o755); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/byokd", "./cmd/byokd-dev", "./cmd/byokctl", "./cmd/kpemu")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, b)
			return
		}
		// BYOKD_TEST_BYOKD runs the tests against another byokd binary,
		// to show that a test fails on an older byokd.
		if other := os.Getenv("BYOKD_TEST_BYOKD"); other != "" {
			b, err := os.ReadFile(other)
			if err == nil {
				err = os.WriteFile(filepath.Join(binDir, "byokd"), b, 0o755)
			}
			if err != nil {
				buildErr = fmt.Errorf("BYOKD_TEST_BYOKD: %w", err)
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Byokd is a byokd process.
type Byokd struct {
	t      testing.TB
	Dir    string // holds config.toml, apikey, state/, kp.sock
	Socket string
	Config string
	// Settings is the configuration written to Config.
	Settings *config.Config
	cmd      *exec.Cmd
	logs     *SyncBuffer
	done     chan struct{}
	err      error
}

// Options change the generated config.
type Options struct {
	RootKeyID     string
	Provision     bool
	Interval      string // poll interval, default "1s"
	Proof         string // proof interval, default "1m"
	OfflineGrace  string // default "1h"
	LockOnExpired bool
	ClusterID     string   // default "test-cluster"
	ConfirmWindow string   // poll.confirm_window; default byokd's
	APIKey        string   // default APIKey
	Dir           string   // reuse a folder (restart); default a new one
	Env           []string // extra environment, e.g. NOTIFY_SOCKET
	// Config, when set, changes the config last: lock actions, socket
	// settings, anything the fields above do not cover.
	Config func(*config.Config)
	// Activate starts byokd under systemd-socket-activate, which creates
	// the socket and hands it over on the first connection.
	Activate bool
	// Credential, when set, runs byokd as this uid/gid (the test must run as
	// root). The folder and everything in it are handed to that user, as
	// byokd's ownership checks and its socket require.
	Credential *syscall.Credential
}

// StartByokd writes a config for kp and starts byokd on it. The folder is
// short (unix socket paths are limited to 108 bytes) and world-traversable,
// so tests can connect as other users.
func StartByokd(t testing.TB, k *KP, o Options) *Byokd {
	t.Helper()
	b := PrepareByokd(t, k, o)
	b.Start(t)
	return b
}

// Dir makes the folder StartByokd uses when Options.Dir is empty, for a
// test to put files in before: short (unix socket paths are limited to 108
// bytes), world-traversable, with a private state/ folder. It is removed at
// the end of the test.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// PrepareByokd writes StartByokd's folder and config without starting byokd,
// so a test can change or plant files first; then Start or RunToExit.
func PrepareByokd(t testing.TB, k *KP, o Options) *Byokd {
	t.Helper()
	bins := Binaries(t)
	dir := o.Dir
	if dir == "" {
		dir = Dir(t)
	}
	apiKey := o.APIKey
	if apiKey == "" {
		apiKey = APIKey
	}
	if err := os.WriteFile(filepath.Join(dir, "apikey"), []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &Byokd{t: t, Dir: dir, Socket: filepath.Join(dir, "kp.sock"), Config: filepath.Join(dir, "config.toml"), logs: &SyncBuffer{}, done: make(chan struct{})}
	b.Settings = byokdConfig(t, k, o, dir, b.Socket)
	WriteConfig(t, b.Config, b.Settings)
	if o.Credential != nil {
		chownTree(t, dir, o.Credential)
	}
	b.cmd = exec.Command(filepath.Join(bins, "byokd"), "--config", b.Config)
	if o.Activate {
		b.cmd = exec.Command("systemd-socket-activate", "-l", b.Socket, filepath.Join(bins, "byokd"), "--config", b.Config)
	}
	b.cmd.Env = append(os.Environ(), o.Env...)
	if o.Credential != nil {
		b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.Credential}
	}
	b.cmd.Stdout = b.logs
	b.cmd.Stderr = b.logs
	return b
}

// byokdConfig is the configuration PrepareByokd writes: byokd against kp
// with its API key, state and socket in dir, a 1 s poll without jitter,
// the memory sealer, both key-provider modes for this process's uid, a
// free ops port and debug logs in JSON.
func byokdConfig(t testing.TB, k *KP, o Options, dir, socket string) *config.Config {
	t.Helper()
	duration := func(key, v, def string) config.Duration {
		if v == "" {
			v = def
		}
		var d config.Duration
		if err := d.UnmarshalText([]byte(v)); err != nil {
			t.Fatalf("testenv.Options %s: %v", key, err)
		}
		return d
	}
	c := config.Default()
	c.ClusterID = cmp.Or(o.ClusterID, "test-cluster")
	c.KeyProtect.URL, c.KeyProtect.IAMURL = k.URL, k.URL
	c.KeyProtect.InstanceID, c.KeyProtect.RootKeyID = InstanceID, o.RootKeyID
	c.KeyProtect.APIKeyFile = filepath.Join(dir, "apikey")
	c.KeyProtect.Timeout = config.Duration(3 * time.Second)
	if k.CAFile != "" {
		c.KeyProtect.CAFile = k.CAFile
	} else {
		c.KeyProtect.AllowInsecureHTTP = true
	}
	c.State.Dir, c.State.Provision = filepath.Join(dir, "state"), o.Provision
	c.Poll.Interval = duration("Interval", o.Interval, "1s")
	c.Poll.ProofInterval = duration("Proof", o.Proof, "1m")
	c.Poll.OfflineGrace = duration("OfflineGrace", o.OfflineGrace, "1h")
	if o.ConfirmWindow != "" {
		c.Poll.ConfirmWindow = duration("ConfirmWindow", o.ConfirmWindow, "")
	}
	c.Poll.Jitter, c.Poll.LockOnExpired = 0, o.LockOnExpired
	c.Sealer.Backend = "memory"
	c.Socket.Path, c.Socket.Mode, c.Socket.Group = socket, 0o600, ""
	c.Socket.AllowedUIDs = []int{os.Getuid()}
	c.Socket.Modes = []string{string(keyprovider.Release), string(keyprovider.Strict)}
	c.Ops.Listen = "127.0.0.1:0"
	c.Log.Level, c.Log.Format = "debug", "json"
	if o.Config != nil {
		o.Config(c)
	}
	return c
}

// WriteConfig writes c to path as byokd's configuration file (mode 0600).
func WriteConfig(t testing.TB, path string, c *config.Config) {
	t.Helper()
	data, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// RunToExit runs a prepared byokd that must refuse to start, and returns its
// output; it fails the test if byokd is still running after 20 s or exits 0.
func (b *Byokd) RunToExit(t testing.TB) string {
	t.Helper()
	b.launch(t)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		b.Kill()
		t.Fatalf("byokd did not refuse to start:\n%s", b.Logs())
	}
	if b.err == nil {
		t.Fatalf("byokd exited 0, want a refusal:\n%s", b.Logs())
	}
	return b.Logs()
}

// launch starts the process; done closes when it exits.
func (b *Byokd) launch(t testing.TB) {
	t.Helper()
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.err = b.cmd.Wait(); close(b.done) }()
}

// Start starts a prepared byokd and waits for its socket.
func (b *Byokd) Start(t testing.TB) {
	t.Helper()
	b.launch(t)
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("byokd logs:\n%s", b.Logs())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(b.Socket); err == nil {
			break
		}
		select {
		case <-b.done:
			t.Fatalf("byokd exited at start: %v\n%s", b.err, b.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("byokd did not create its socket\n%s", b.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chownTree hands dir and everything in it to cred's uid and gid, without
// following symlinks.
func chownTree(t testing.TB, dir string, cred *syscall.Credential) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(cred.Uid), int(cred.Gid))
	})
	if err != nil {
		t.Fatalf("hand %s to uid %d: %v", dir, cred.Uid, err)
	}
}

// PID is byokd's process id.
func (b *Byokd) PID() int { return b.cmd.Process.Pid }

// Logs returns everything byokd wrote.
func (b *Byokd) Logs() string { return b.logs.String() }

// Stop sends SIGTERM and waits for the exit (killing after 10 s).
func (b *Byokd) Stop() error {
	select {
	case <-b.done:
		return b.err
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		return errors.New("byokd did not stop on SIGTERM")
	}
	return b.err
}

// Kill stops byokd with SIGKILL.
func (b *Byokd) Kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

// Exited reports whether byokd exited, and how.
func (b *Byokd) Exited() (bool, error) {
	select {
	case <-b.done:
		return true, b.err
	default:
		return false, nil
	}
}

// Conn is a gRPC connection to byokd's socket, as this test process.
func (b *Byokd) Conn() *grpc.ClientConn {
	b.t.Helper()
	return b.Client().Conn()
}

// Client is a key provider client of byokd's socket, as this test process;
// it is closed when the test ends.
func (b *Byokd) Client() *keyprovider.Client {
	b.t.Helper()
	c, err := keyprovider.Dial(b.Socket)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { c.Close() })
	return c
}

// WaitState waits until Status reports want, failing the test after d.
func (b *Byokd) WaitState(t testing.TB, c pb.KeyProviderServiceClient, want pb.State, d time.Duration) *pb.StatusResponse {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *pb.StatusResponse
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := c.Status(ctx, &pb.StatusRequest{})
		cancel()
		if err == nil {
			last = s
			if s.GetState() == want {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %v not reached within %v; last %v (err %v)\n%s", want, d, last, err, b.Logs())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Ctl runs byokctl against this byokd; cred, when set, runs it as that
// uid/gid. It returns stdout, stderr and the exit code.
func (b *Byokd) Ctl(t testing.TB, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(Binaries(t), "byokctl"), append([]string{"--socket", b.Socket}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("byokctl: %v", err)
	}
	return out.String(), errb.String(), code
}

// SyncBuffer collects what a process or a logger writes while a test reads
// it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
