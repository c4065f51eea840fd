// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byokd/byokd/internal/testenv"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// TestNotifyProtocol runs byokd with a notify socket and a watchdog, as
// systemd would: READY with a STATUS, STATUS on every change, WATCHDOG
// pings, STOPPING at the end, in that order.
func TestNotifyProtocol(t *testing.T) {
	dir, err := os.MkdirTemp("", "ns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true,
		Env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=600000"}})
	b.WaitState(t, b.Client(), pb.State_STATE_UNLOCKED, 10*time.Second)
	// A few watchdog periods, and at least one poll (1 s interval) that
	// leaves the status as it was.
	time.Sleep(1700 * time.Millisecond)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var got []string
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				goto done
			}
			got = append(got, m)
			continue
		case <-time.After(600 * time.Millisecond):
		}
		break
	}
done:
	if len(got) < 4 {
		t.Fatalf("messages: %q", got)
	}
	if !strings.HasPrefix(got[0], "READY=1\nSTATUS=") {
		t.Fatalf("first message %q, want READY=1 with a STATUS", got[0])
	}
	if got[len(got)-1] != "STOPPING=1" {
		t.Fatalf("last message %q, want STOPPING=1", got[len(got)-1])
	}
	var unlockedStatus, pings int
	for _, m := range got[1 : len(got)-1] {
		switch {
		case m == "STATUS=UNLOCKED":
			unlockedStatus++
		case m == "WATCHDOG=1":
			pings++
		}
	}
	if unlockedStatus != 1 || pings < 2 {
		t.Fatalf("want STATUS=UNLOCKED once and watchdog pings, got %q", got)
	}
}

// TestSocketActivation: byokd takes its socket from systemd
// (systemd-socket-activate sets LISTEN_FDS), serves on it, and leaves the
// file to systemd when it stops.
func TestSocketActivation(t *testing.T) {
	k := testenv.StartKP(t)
	root := k.RootKey(t, "node-root")
	b := testenv.StartByokd(t, k, testenv.Options{RootKeyID: root, Provision: true, Activate: true})
	c := b.Client()
	b.WaitState(t, c, pb.State_STATE_UNLOCKED, 10*time.Second)
	dataKey(t, c, "t")
	if !strings.Contains(b.Logs(), `"socket_activated":true`) {
		t.Fatalf("byokd did not use the socket from systemd:\n%s", b.Logs())
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(b.Socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("systemd's socket file was removed: %v", err)
	}
}
