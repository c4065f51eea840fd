// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryPrintsAddressAndStopsOnSIGTERM runs the real kpemu binary.
func TestBinaryPrintsAddressAndStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kpemu")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--api-key", "cmd-test-key",
		"--instance-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--state", state, "--quiet", "--month", "1s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(10 * time.Second):
		t.Fatalf("no ready line; stderr: %s", stderr.String())
	}
	base, ok := strings.CutPrefix(line, "kpemu listening on ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || strings.HasSuffix(base, ":0") {
		t.Fatalf("ready line %q", line)
	}
	resp, err := http.PostForm(base+"/identity/token", url.Values{
		"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {"cmd-test-key"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d", resp.StatusCode)
	}

	// --month 1s: a rotation policy of one month rotates the key within
	// about a second.
	t.Setenv("KP_URL", base)
	t.Setenv("KP_API_KEY", "cmd-test-key")
	t.Setenv("KP_INSTANCE_ID", "3f2504e0-4f89-41d3-9a0c-0305e82c3301")
	t.Setenv("KP_TOKEN_URL", "")
	id := strings.TrimSpace(mustCtl(t, "create-root", "month-test"))
	mustCtl(t, "rotation-policy", "1", id)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(mustCtl(t, "show", id), `"lastRotateDate"`) {
		if time.Now().After(deadline) {
			t.Fatal("no policy rotation with --month 1s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kpemu did not stop on SIGTERM")
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state file: %v", err)
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no api key":     {"--instance-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
		"no instance":    {"--api-key", "k"},
		"bad instance":   {"--api-key", "k", "--instance-id", "x"},
		"half TLS":       {"--api-key", "k", "--instance-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--tls-cert", "c.pem"},
		"stray argument": {"--api-key", "k", "--instance-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "extra"},
		"zero month":     {"--api-key", "k", "--instance-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--month", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("KPEMU_API_KEY", "")
			var out, errb strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(args, &out, &errb) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("accepted")
				}
			case <-ctx.Done():
				t.Fatal("run did not return")
			}
		})
	}
}
