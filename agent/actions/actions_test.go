// SPDX-License-Identifier: Apache-2.0

package actions

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestActionsRunInTheOrderOfTheTransitions: lock, unlock, lock queued at
// once run one at a time in that order (the first lock action is slow, so
// an unlock action started beside it would finish first), each logged as
// its kind.
func TestActionsRunInTheOrderOfTheTransitions(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	var logs syncBuf
	r := New(
		[]Action{{Command: []string{"/bin/sh", "-c", "sleep 0.3; echo lock >> " + out}, Timeout: 5 * time.Second}},
		[]Action{{Command: []string{"/bin/sh", "-c", "echo unlock >> " + out}, Timeout: 5 * time.Second}},
		slog.New(slog.NewJSONHandler(&logs, nil)))
	r.Queue(OnLock, "root key disabled")
	r.Queue(OnUnlock, "keys served again")
	r.Queue(OnLock, "root key disabled")
	want := "lock\nunlock\nlock\n"
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if string(b) == want {
			break
		}
		if time.Now().After(deadline) || !strings.HasPrefix(want, string(b)) {
			t.Fatalf("the actions ran as %q, want %q", b, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for time.Now().Before(deadline) && strings.Count(logs.String(), "action ran") < 3 {
		time.Sleep(20 * time.Millisecond)
	}
	if l := logs.String(); strings.Count(l, `"msg":"lock action ran","event":"audit","action":"lock_action"`) != 2 ||
		strings.Count(l, `"msg":"unlock action ran","event":"audit","action":"unlock_action"`) != 1 {
		t.Fatalf("audit records:\n%s", l)
	}
}

// TestNoActionsNoRun: a kind without actions queues nothing.
func TestNoActionsNoRun(t *testing.T) {
	r := New(nil, nil, slog.New(slog.DiscardHandler))
	r.Queue(OnLock, "x")
	r.Queue(OnUnlock, "y")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running || len(r.queue) != 0 {
		t.Fatal("a runner without actions started")
	}
}
