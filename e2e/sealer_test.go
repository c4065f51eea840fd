// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestSealerBackendChoice: backend = "auto" falls back to memory on a host
// without /dev/pkey HMAC keys or a TPM and says why; an explicitly configured
// backend that is not available stops byokd at start, never a silent
// downgrade.
func TestSealerBackendChoice(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	run := func(backend, device string) (string, error) {
		cfg := *b.Settings
		cfg.Sealer = config.Sealer{Backend: backend, TPMDevice: device}
		path := filepath.Join(t.TempDir(), "config.toml")
		testenv.WriteConfig(t, path, &cfg)
		cmd := exec.Command(filepath.Join(testenv.Binaries(t), "byokd"), "--config", path)
		var buf testenv.SyncBuffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return buf.String(), err
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Signal(os.Interrupt)
			<-done
			return buf.String(), nil
		}
	}
	out, err := run("cpacf", "/dev/tpmrm0")
	if err == nil || !strings.Contains(out, "sealer backend cpacf") {
		t.Fatalf("an unavailable cpacf backend did not stop byokd: %v\n%s", err, out)
	}
	out, err = run("tpm", "/nonexistent/tpm")
	if err == nil || !strings.Contains(out, "sealer backend tpm (/nonexistent/tpm)") {
		t.Fatalf("an unavailable tpm backend did not stop byokd: %v\n%s", err, out)
	}
	out, _ = run("auto", "/nonexistent/tpm")
	if !strings.Contains(out, `"sealer":"memory"`) || !strings.Contains(out, "not_chosen") || !strings.Contains(out, "cpacf:") {
		t.Fatalf("auto did not log its choice and why:\n%s", out)
	}
}
