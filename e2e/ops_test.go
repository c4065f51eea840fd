// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

func opsAddr(t *testing.T, b *testenv.Byokd) string {
	t.Helper()
	m := regexp.MustCompile(`"ops":"([^"]+)"`).FindStringSubmatch(b.Logs())
	if m == nil {
		t.Fatalf("no ops address in the logs:\n%s", b.Logs())
	}
	return m[1]
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestProbesMetricsWatchAndLockActions follows one lock through every
// channel an operator or a plugin sees it on.
func TestProbesMetricsWatchAndLockActions(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	marker := filepath.Join(t.TempDir(), "lock-action-ran")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Config: func(c *config.Config) {
		c.LockActions = []config.LockAction{{
			Command: []string{"/bin/sh", "-c", "echo locked > " + marker + "; echo stopping the database"},
			Timeout: config.Duration(5 * time.Second),
		}}
	}})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	addr := opsAddr(t, b)

	watch, err := c.Watch(context.Background(), &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus().GetState() != pb.State_STATE_UNLOCKED {
		t.Fatalf("Watch does not start with the current state: %v %v", first, err)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != 200 || !strings.Contains(body, "UNLOCKED") {
		t.Fatalf("readyz unlocked: %d %s", code, body)
	}

	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	next, err := watch.Recv()
	if err != nil || next.GetStatus().GetState() != pb.State_STATE_LOCKED || next.GetStatus().GetReason() != "root key disabled" {
		t.Fatalf("Watch after the disable: %v %v", next, err)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "root key disabled") {
		t.Fatalf("readyz locked: %d %s", code, body)
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	_, metrics := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`byokd_state{state="LOCKED"} 1`,
		`byokd_state{state="UNLOCKED"} 0`,
		`byokd_lock_events_total{cause="key-disabled"} 1`,
		`byokd_keyprotect_requests_total{operation="metadata",outcome="ok"}`,
		`byokd_keyprotect_requests_total{operation="wrap",outcome="ok"} 1`,
		`byokd_keyprovider_requests_total{code="OK",method="Status"}`,
		`byokd_last_successful_check_timestamp_seconds`,
		`byokd_keyprotect_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, testenv.APIKey) {
		t.Fatal("the API key is in the metrics")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(got)) == "locked" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lock action did not run\n%s", b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(b.Logs(), "stopping the database") {
		if time.Now().After(deadline) {
			t.Fatalf("the lock action's output was not logged\n%s", b.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	k.Do(t, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
	next, err = watch.Recv()
	if err != nil || next.GetStatus().GetState() != pb.State_STATE_UNLOCKED {
		t.Fatalf("Watch after the enable: %v %v", next, err)
	}

	out, _, code := b.Ctl(t, nil, "wait", "--unlocked", "--timeout", "5s")
	if code != 0 || strings.TrimSpace(out) != "UNLOCKED" {
		t.Fatalf("wait --unlocked: %d %q", code, out)
	}
	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_LOCKED, 3*time.Second)
	_, errOut, code := b.Ctl(t, nil, "wait", "--unlocked", "--timeout", "1s")
	if code != 1 || !strings.Contains(errOut, "root key disabled") {
		t.Fatalf("wait --unlocked while locked: %d %q", code, errOut)
	}
}

// TestBadConfigAndKeyFileGetClearErrors runs byokd and byokctl on broken
// configs: each exits non-zero with an error naming what is wrong.
func TestBadConfigAndKeyFileGetClearErrors(t *testing.T) {
	bins := testenv.Binaries(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "apikey")
	if err := os.WriteFile(keyFile, []byte("a-secret-api-key-value\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := `cluster_id = "c"
[keyprotect]
url = "https://kp.example"
instance_id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
root_key_id = "root-alias"
api_key_file = "` + keyFile + `"
[state]
dir = "` + dir + `"
[socket]
path = "` + filepath.Join(dir, "s.sock") + `"
allowed_uids = [0]
[ops]
listen = ""
`
	cases := []struct {
		name, config string
		want         []string
	}{
		{"unknown key", strings.Replace(good, "[state]\n", "[state]\nprovison = true\n", 1), []string{"config.toml:8: state.provison: unknown key"}},
		{"bad duration", strings.Replace(good, "[state]\n", "[poll]\ninterval = \"soon\"\n[state]\n", 1), []string{"config.toml:8: poll.interval"}},
		{"missing instance", strings.Replace(good, "instance_id = \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"\n", "", 1), []string{"keyprotect.instance_id: required"}},
		{"group-readable API key file", good, []string{keyFile, "0644"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(filepath.Join(bins, "byokd"), "--config", path)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("byokd started on a bad config:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Fatalf("byokd's error lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "a-secret-api-key-value") {
				t.Fatal("the API key is in the error")
			}
			if tc.name != "group-readable API key file" {
				ctl := exec.Command(filepath.Join(bins, "byokctl"), "check-config", path)
				cout, err := ctl.CombinedOutput()
				if err == nil || !strings.Contains(string(cout), tc.want[0]) {
					t.Fatalf("check-config: %v\n%s", err, cout)
				}
			}
		})
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	_ = os.WriteFile(path, []byte(good), 0o600)
	if out, err := exec.Command(filepath.Join(bins, "byokctl"), "check-config", path).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("check-config of a good file: %v %s", err, out)
	}
	_ = os.Chmod(path, 0o666)
	if out, err := exec.Command(filepath.Join(bins, "byokctl"), "check-config", path).CombinedOutput(); err == nil || !strings.Contains(string(out), "0666") {
		t.Fatalf("check-config of a world-writable file: %v %s", err, out)
	}
}

// TestByokctlTakesARelativeSocket: byokctl --socket takes a path relative to
// its working directory, as typed in a checkout (.dev/keyprovider.sock,
// ./.dev/keyprovider.sock), as well as an absolute one; a relative path was
// read as a host name ("invalid (non-empty) authority: .dev").
func TestByokctlTakesARelativeSocket(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	dir, base := filepath.Dir(filepath.Dir(b.Socket)), filepath.Join(filepath.Base(filepath.Dir(b.Socket)), filepath.Base(b.Socket))
	for _, socket := range []string{base, "./" + base, b.Socket} {
		cmd := exec.Command(filepath.Join(testenv.Binaries(t), "byokctl"), "--socket", socket, "status", "--json")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"state":"UNLOCKED"`) {
			t.Fatalf("byokctl --socket %s status (in %s): %v\n%s", socket, dir, err, out)
		}
	}
}

// TestCheckConfigOfTheSystemdCredentialSetup: the documented setup leaves
// keyprotect.api_key_file out, and byokd.service hands the API key over as
// the credential kp-apikey from /etc/byokd/apikey. byokctl check-config,
// run from an operator's shell (no $CREDENTIALS_DIRECTORY), checks the
// config as byokd will see it under its unit, and checks the credential's
// source file; it refused the setup before ("required when
// $CREDENTIALS_DIRECTORY is not set"), so the postinst's
// "check-config && systemctl start byokd" never started byokd.
func TestCheckConfigOfTheSystemdCredentialSetup(t *testing.T) {
	bins := testenv.Binaries(t)
	dir := t.TempDir()
	cfg := `cluster_id = "c"
[keyprotect]
url = "https://kp.example"
instance_id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
root_key_id = "root-alias"
[state]
dir = "` + dir + `"
[socket]
allowed_uids = [0]
`
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	source := filepath.Join(dir, "apikey")
	check := func() (string, error) {
		cmd := exec.Command(filepath.Join(bins, "byokctl"), "check-config", "--credential", source, path)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err == nil || !strings.Contains(out, source) || !strings.Contains(out, "kp-apikey") {
		t.Fatalf("check-config with no API key source: %v\n%s", err, out)
	}
	if err := os.WriteFile(source, []byte("a-secret-api-key-value\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := check(); err == nil || !strings.Contains(out, "0644") {
		t.Fatalf("check-config with a readable API key source: %v\n%s", err, out)
	}
	if err := os.Chmod(source, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := check()
	if err != nil || !strings.Contains(out, "ok") || !strings.Contains(out, "credential kp-apikey") {
		t.Fatalf("check-config of the documented setup: %v\n%s", err, out)
	}
	if strings.Contains(out, "a-secret-api-key-value") {
		t.Fatal("the API key is in check-config's output")
	}
}
