// SPDX-License-Identifier: Apache-2.0

// Package notify speaks systemd's notify protocol for byokd: READY once the
// socket is served, STATUS kept current with the lock state, WATCHDOG only
// while the main loop beats, STOPPING on shutdown.
package notify

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends notify messages when $NOTIFY_SOCKET is set; without it
// every call does nothing.
type Notifier struct {
	send func(state string) (bool, error)
}

// New reads $NOTIFY_SOCKET at each send, as systemd sets it for the unit.
func New() *Notifier {
	return &Notifier{send: func(state string) (bool, error) { return daemon.SdNotify(false, state) }}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// Ready says the service is up (the socket is served, locked or not).
func (n *Notifier) Ready(status string) {
	_, _ = n.send(daemon.SdNotifyReady + "\nSTATUS=" + oneLine(status))
}

// Status sets the one-line status systemctl shows.
func (n *Notifier) Status(status string) { _, _ = n.send("STATUS=" + oneLine(status)) }

// Stopping says the service is shutting down.
func (n *Notifier) Stopping() { _, _ = n.send(daemon.SdNotifyStopping) }

// WatchdogInterval is systemd's WatchdogSec for this process, or 0.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// Watchdog sends WATCHDOG=1 every interval/3 while alive reports true, until
// ctx ends. When the main loop stops beating, the pings stop and systemd
// restarts the service after WatchdogSec.
func (n *Notifier) Watchdog(ctx context.Context, interval time.Duration, alive func() bool) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		if alive() {
			_, _ = n.send(daemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Heartbeat is the main loop's sign of life.
type Heartbeat struct{ last atomic.Int64 }

// Beat records that the main loop ran.
func (h *Heartbeat) Beat() { h.last.Store(time.Now().UnixNano()) }

// Fresh reports whether the last beat is younger than maxAge.
func (h *Heartbeat) Fresh(maxAge time.Duration) bool {
	last := h.last.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < maxAge
}
