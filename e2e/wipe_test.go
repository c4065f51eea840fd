// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/node"
	"github.com/byokd/byokd/agent/server"
	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/seal/tpm"
	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestHungTPMFailsTheWipeTruthfullyAndNeverBlocksStatus runs a node on a
// real swtpm (byokd as a process cannot reach swtpm: it opens a TPM
// character device, which these machines do not have, so the node is
// built in this process through node.New, with its gRPC socket and ops
// listener). swtpm stops answering, then the root key is disabled: the
// node is LOCKED at once — Status, key calls and /readyz answer while the
// wipe waits — the failed wipe is logged as such and shown in Status, and
// the wipe is retried and succeeds once the TPM answers again.
func TestHungTPMFailsTheWipeTruthfullyAndNeverBlocksStatus(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "tpm-root")
	sw := testenv.StartSWTPM(t)
	sealer, err := tpm.New(tpm.NewStream(sw.Conn))
	if err != nil {
		t.Fatal(err)
	}
	dir := testenv.Dir(t)
	cfg := k.NodeConfig(root, filepath.Join(dir, "state"), "tpm-cluster")
	cfg.Socket.Modes = []string{"release"}
	cfg.Ops.Listen = "127.0.0.1:0"
	sock := filepath.Join(dir, "kp.sock")
	l, err := server.Listen(sock, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	cfg.Socket.AllowedUIDs = []int{0}
	n, err := node.New(cfg, node.Deps{APIKey: testenv.APIKey, Sealer: sealer, Listener: l,
		Log: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		_ = sw.Resume()
		cancel()
		<-done
		n.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", logs)
		}
	})
	c, err := keyprovider.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitNode(t, n, func(st lock.Status) bool { return st.State == lock.Unlocked }, 15*time.Second)
	if _, err := c.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: "t"}); err != nil {
		t.Fatal(err)
	}

	if err := sw.Pause(); err != nil {
		t.Fatal(err)
	}
	k.Do(t, "disable", func(ctx context.Context, kc *kp.Client) error { return kc.DisableKey(ctx, root) })
	waitNode(t, n, func(st lock.Status) bool { return st.State == lock.Locked }, 3*time.Second)
	// The wipe now waits for the hung TPM; everything else answers.
	for range 3 {
		start := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(cctx, &pb.StatusRequest{})
		_, kerr := c.GetDataKey(cctx, &pb.GetDataKeyRequest{KeyId: "t"})
		ccancel()
		if err != nil || st.GetState() != pb.State_STATE_LOCKED || status.Code(kerr) != codes.FailedPrecondition {
			t.Fatalf("during the wipe: status %v %v, key call %v", st, err, kerr)
		}
		resp, err := http.Get("http://" + n.Addr() + "/readyz")
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz during the wipe: %v %v", resp, err)
		}
		resp.Body.Close()
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Status, a key call and /readyz took %v during the wipe", d)
		}
		time.Sleep(500 * time.Millisecond)
	}
	st := waitNode(t, n, func(st lock.Status) bool { return st.WipeError != "" }, 15*time.Second)
	if st.State != lock.Locked || !strings.Contains(st.WipeError, "does not answer") {
		t.Fatalf("after the wipe timed out: %+v", st)
	}
	if s, err := c.Status(ctx, &pb.StatusRequest{}); err != nil || s.GetWipeError() == "" {
		t.Fatalf("Status does not carry the wipe error: %v %v", s, err)
	}
	if !strings.Contains(logs.String(), "keys could NOT be wiped") || strings.Contains(logs.String(), "node locked: keys wiped") {
		t.Fatal("the log does not say truthfully that the keys were not wiped")
	}

	if err := sw.Resume(); err != nil {
		t.Fatal(err)
	}
	waitNode(t, n, func(st lock.Status) bool { return st.State == lock.Locked && st.WipeError == "" }, 30*time.Second)
	if !strings.Contains(logs.String(), "keys wiped after an earlier failure") {
		t.Fatal("the retried wipe is not logged")
	}
	k.Do(t, "enable", func(ctx context.Context, kc *kp.Client) error { return kc.EnableKey(ctx, root) })
	waitNode(t, n, func(st lock.Status) bool { return st.State == lock.Unlocked }, 15*time.Second)
	if _, err := c.GetDataKey(ctx, &pb.GetDataKeyRequest{KeyId: "t"}); err != nil {
		t.Fatalf("a key call after the TPM came back: %v", err)
	}
}

func waitNode(t *testing.T, n *node.Node, ok func(lock.Status) bool, d time.Duration) lock.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := n.Machine.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("node status %+v not reached within %v", st, d)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
