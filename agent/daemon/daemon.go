// SPDX-License-Identifier: Apache-2.0

// Package daemon runs byokd as a process: it makes the process
// non-dumpable, takes the key provider socket (from systemd or made here),
// builds the node, speaks sd_notify and feeds the watchdog, and stops on
// the caller's signal.
package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/node"
	"github.com/byokd/byokd/agent/notify"
	"github.com/byokd/byokd/agent/server"
	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/internal/task"
	"github.com/byokd/byokd/version"
)

// Options are what main adds to the config.
type Options struct {
	// Ready is called once the socket is served (locked or not), with
	// where byokd listens.
	Ready func(Listening)
	// Log receives byokd's logs; nil builds one from the config on stderr.
	Log *slog.Logger
}

// Listening says where a started byokd listens.
type Listening struct {
	// Socket is the key provider socket's path.
	Socket string
	// Ops is the ops listener's host:port, "" when it is off.
	Ops string
	// KMIP is the KMIP server's host:port, "" when it is off.
	KMIP string
}

// NewLogger builds the logger the config asks for.
func NewLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func groupID(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// Run runs byokd until ctx ends, then stops cleanly: key calls in flight
// finish, watchers are told, keys are wiped.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	log := opt.Log
	if log == nil {
		log = NewLogger(cfg.Log, os.Stderr)
	}
	if err := secmem.SetNonDumpable(); err != nil {
		return fmt.Errorf("make the process non-dumpable: %w", err)
	}
	for _, l := range cfg.Loosened() {
		log.Warn("security default loosened", "setting", l)
	}
	apiKey, err := cfg.LoadAPIKey()
	if err != nil {
		return err
	}
	sock, activated, err := listen(cfg, log)
	if err != nil {
		return err
	}
	defer sock.Close()
	sd := notify.New()
	n, err := node.New(cfg, node.Deps{
		APIKey: apiKey.Reveal(), Listener: sock, Log: log,
		OnTransition: func(from, to lock.Status, _ lock.Event) {
			// Every successful check fires a transition; systemd hears
			// only of a changed status line.
			if line := statusLine(to); line != statusLine(from) {
				sd.Status(line)
			}
		},
	})
	if err != nil {
		return err
	}
	defer n.Close()
	st := n.Machine.Status()
	log.Info("byokd serving", "version", version.Version, "socket", cfg.Socket.Path, "socket_activated", activated, "ops", n.Addr(), "kmip", n.KMIPAddr(),
		"sealer", st.Sealer, "root_key_id", cfg.KeyProtect.RootKeyID, "instance_id", cfg.KeyProtect.InstanceID,
		"cluster_id", cfg.ClusterID)
	sd.Ready(statusLine(st))
	if opt.Ready != nil {
		opt.Ready(Listening{Socket: cfg.Socket.Path, Ops: n.Addr(), KMIP: n.KMIPAddr()})
	}
	tasks := []task.Task{n.Run, func(ctx context.Context) error {
		<-ctx.Done()
		log.Info("byokd stopping")
		sd.Stopping()
		return nil
	}}
	if wd := notify.WatchdogInterval(); wd > 0 {
		// The key manager's loop is the main loop: while it beats, the
		// systemd watchdog is fed and /healthz is 200.
		log.Info("systemd watchdog on", "interval", wd, "main_loop_max_age", n.MainLoopMaxAge())
		tasks = append(tasks, func(ctx context.Context) error { sd.Watchdog(ctx, wd, n.Alive); return nil })
	}
	err = task.Run(ctx, tasks...)
	audit.Info(log, "byokd stopped", audit.Stop)
	return err
}

func statusLine(st lock.Status) string {
	if st.Reason == "" {
		return st.State.String()
	}
	return st.State.String() + ": " + st.Reason
}

// listen takes the key provider socket from systemd (LISTEN_FDS, the
// byokd.socket unit) when there is one, else creates it.
func listen(cfg *config.Config, log *slog.Logger) (net.Listener, bool, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, false, fmt.Errorf("sockets from systemd: %w", err)
	}
	var found net.Listener
	for _, l := range lns {
		if l == nil {
			continue
		}
		if ul, ok := l.(*net.UnixListener); ok && found == nil {
			// systemd owns the file: it stays when byokd stops.
			ul.SetUnlinkOnClose(false)
			found = ul
			continue
		}
		l.Close()
	}
	if found != nil {
		if a := found.Addr().String(); a != cfg.Socket.Path {
			log.Warn("systemd passed a socket at another path than socket.path", "passed", a, "socket.path", cfg.Socket.Path)
		}
		return found, true, nil
	}
	gid, err := groupID(cfg.Socket.Group)
	if err != nil {
		return nil, false, err
	}
	sock, err := server.Listen(cfg.Socket.Path, os.FileMode(cfg.Socket.Mode), gid)
	if err != nil {
		return nil, false, err
	}
	return sock, false, nil
}
