// SPDX-License-Identifier: Apache-2.0

package notify

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket listens like systemd does and returns the messages received.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(2 * time.Second):
		t.Fatal("no notify message")
		return ""
	}
}

func TestReadyStatusStoppingReachTheNotifySocket(t *testing.T) {
	ch := notifySocket(t)
	n := New()
	n.Ready("LOCKED: root key\ndisabled")
	if m := next(t, ch); m != "READY=1\nSTATUS=LOCKED: root key disabled" {
		t.Fatalf("ready: %q", m)
	}
	n.Status("UNLOCKED")
	if m := next(t, ch); m != "STATUS=UNLOCKED" {
		t.Fatalf("status: %q", m)
	}
	n.Stopping()
	if m := next(t, ch); m != "STOPPING=1" {
		t.Fatalf("stopping: %q", m)
	}
}

func TestWatchdogPingsOnlyWhileTheMainLoopBeats(t *testing.T) {
	ch := notifySocket(t)
	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go New().Watchdog(ctx, 150*time.Millisecond, alive.Load)
	for i := 0; i < 3; i++ {
		if m := next(t, ch); m != "WATCHDOG=1" {
			t.Fatalf("ping %d: %q", i, m)
		}
	}
	alive.Store(false)
	time.Sleep(100 * time.Millisecond)
	for len(ch) > 0 {
		<-ch
	}
	select {
	case m := <-ch:
		t.Fatalf("pinged while the main loop is stuck: %q", m)
	case <-time.After(500 * time.Millisecond):
	}
	alive.Store(true)
	if m := next(t, ch); !strings.HasPrefix(m, "WATCHDOG=1") {
		t.Fatalf("no ping after recovery: %q", m)
	}
}

func TestHeartbeat(t *testing.T) {
	var h Heartbeat
	if h.Fresh(time.Hour) {
		t.Fatal("fresh before any beat")
	}
	h.Beat()
	if !h.Fresh(time.Second) {
		t.Fatal("not fresh right after a beat")
	}
	time.Sleep(30 * time.Millisecond)
	if h.Fresh(10 * time.Millisecond) {
		t.Fatal("fresh after its max age")
	}
}
