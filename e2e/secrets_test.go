// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/internal/testenv"
	"github.com/byokd/byokd/kpemu"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestSecretsNeverLeak runs a whole lifecycle with a known DEK and API key —
// unlock, key calls, rotation, lock, a refused caller, a bad config — then
// searches every log line, metric, status output, error and the emulator's
// request log for them: zero hits. It also checks byokd's key memory is
// locked and excluded from core dumps.
func TestSecretsNeverLeak(t *testing.T) {
	const apiKey = "hygiene-api-key-4f1c9b7e2d"
	dek := bytes.Repeat([]byte{0xd3, 0x7a, 0x11, 0x5c}, 8)
	k := testenv.StartKP(t, func(c *kpemu.Config) { c.APIKeys = append(c.APIKeys, apiKey) })
	root := k.RootKey(t, "hygiene-root")

	// Provision by hand with the known DEK, as byokd would store it.
	dir := testenv.Dir(t)
	aad := []string{"byokd", "cluster:test-cluster"}
	var ct string
	k.Do(t, "wrap the known DEK", func(ctx context.Context, c *kp.Client) error {
		b, err := c.Wrap(ctx, root, []byte(base64.StdEncoding.EncodeToString(dek)), &aad)
		ct = string(b)
		return err
	})
	rec := map[string]any{"schema": 1, "root_key_id": root, "instance_id": testenv.InstanceID, "cluster_id": "test-cluster",
		"ciphertext": ct, "key_version": root, "aad": aad, "created": "2026-11-28T00:00:00Z", "updated": "2026-11-28T00:00:00Z"}
	rb, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "state", "dek.json"), rb, 0o600); err != nil {
		t.Fatal(err)
	}

	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Dir: dir, APIKey: apiKey, Config: worldAccess})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	_ = os.Chmod(b.Socket, 0o666)
	var outputs []string
	for i := 0; i < 5; i++ {
		r, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: fmt.Sprintf("table:%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(r.GetKey(), dek) {
			t.Fatal("a data key equals the DEK")
		}
	}
	k.Do(t, "rotate", func(ctx context.Context, c *kp.Client) error { return c.Rotate(ctx, root, "") })
	time.Sleep(1500 * time.Millisecond)
	_, errOut, _ := b.Ctl(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "status")
	outputs = append(outputs, errOut)
	k.Do(t, "disable", func(ctx context.Context, c *kp.Client) error { return c.DisableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_LOCKED, 3*time.Second)
	_, err := c.GetDataKey(ctx(t), &pb.GetDataKeyRequest{KeyId: "t"})
	outputs = append(outputs, fmt.Sprint(err))
	out, _, _ := b.Ctl(t, nil, "status", "--json")
	outputs = append(outputs, out)
	out, _, _ = b.Ctl(t, nil, "status")
	outputs = append(outputs, out)

	// Key memory: a locked, non-dumpable mapping in byokd.
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", b.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if !hasLockedDontDump(string(smaps)) {
		t.Fatal("byokd has no locked, MADV_DONTDUMP mapping for its keys")
	}
	metrics := httpGet(t, "http://"+opsAddr(t, b)+"/metrics")
	k.Do(t, "enable", func(ctx context.Context, c *kp.Client) error { return c.EnableKey(ctx, root) })
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 3*time.Second)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}

	// A bad config: its error must not carry the key file's content.
	bad := filepath.Join(t.TempDir(), "config.toml")
	cfg, _ := os.ReadFile(b.Config)
	_ = os.WriteFile(bad, append(cfg, []byte("\nsurprise = \""+apiKey+"\"\n")...), 0o600)
	badBytes, _ := osexec.Command(filepath.Join(testenv.Binaries(t), "byokd"), "--config", bad).CombinedOutput()
	badOut := string(badBytes)
	outputs = append(outputs, badOut)

	reqlog := httpGet(t, k.URL+"/_kpemu/requests")
	secrets := map[string]string{
		"API key":       apiKey,
		"DEK (hex)":     hex.EncodeToString(dek),
		"DEK (b64)":     base64.StdEncoding.EncodeToString(dek),
		"DEK (b64 raw)": base64.RawStdEncoding.EncodeToString(dek),
	}
	haystacks := map[string]string{
		"byokd logs":         b.Logs(),
		"metrics":            metrics,
		"emulator requests":  reqlog,
		"outputs and errors": strings.Join(outputs, "\n"),
	}
	for what, hay := range haystacks {
		if len(hay) == 0 {
			t.Fatalf("%s is empty: the search would prove nothing", what)
		}
		for name, secret := range secrets {
			if strings.Contains(hay, secret) {
				t.Errorf("%s holds the %s", what, name)
			}
		}
		if bytes.Contains([]byte(hay), dek) {
			t.Errorf("%s holds the raw DEK", what)
		}
	}
	if strings.Contains(badOut, apiKey) {
		t.Error("a config error echoed a value")
	}
}

func hasLockedDontDump(smaps string) bool {
	lines := strings.Split(smaps, "\n")
	locked := false
	for _, l := range lines {
		if strings.HasPrefix(l, "Locked:") {
			locked = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(l, "Locked:"), "kB")) != "0"
		}
		if strings.HasPrefix(l, "VmFlags:") && locked {
			f := strings.Fields(strings.TrimPrefix(l, "VmFlags:"))
			var lo, dd bool
			for _, x := range f {
				lo = lo || x == "lo"
				dd = dd || x == "dd"
			}
			if lo && dd {
				return true
			}
		}
	}
	return false
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
