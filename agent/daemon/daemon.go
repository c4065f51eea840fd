// Package daemon wires byokd's parts from a config and runs them until told
// to stop: Key Protect client, wrapped key store, sealer, lock machine,
// poller, key provider socket and ops listener.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/byokd/byokd/agent/actions"
	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/keyprotect"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
	"github.com/byokd/byokd/agent/notify"
	"github.com/byokd/byokd/agent/ops"
	"github.com/byokd/byokd/agent/poller"
	"github.com/byokd/byokd/agent/server"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/cpacf"
	"github.com/byokd/byokd/crypto/seal/tpm"
	"github.com/byokd/byokd/crypto/secmem"
)

// Version is set at build time.
var Version = "dev"

// Options are what main adds to the config.
type Options struct {
	// Ready is called once the socket is served (locked or not), with the
	// socket path and the ops address.
	Ready func(socket, opsAddr string)
	// Log receives byokd's logs; nil builds one from the config on stderr.
	Log *slog.Logger
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

// newSealer picks the backend. backend = "auto" tries cpacf (s390x with
// /dev/pkey and CPACF HMAC protected keys), then tpm (tpm_device opens), then
// memory, and logs the choice and why; an explicitly configured backend that
// is not available is an error, never a silent downgrade.
func newSealer(cfg config.Sealer, log *slog.Logger) (seal.Sealer, error) {
	switch cfg.Backend {
	case "memory":
		return memorySealer()
	case "cpacf":
		s, err := cpacf.New()
		if err != nil {
			return nil, fmt.Errorf("sealer backend cpacf: %w", err)
		}
		return s, nil
	case "tpm":
		s, err := openTPM(cfg.TPMDevice)
		if err != nil {
			return nil, fmt.Errorf("sealer backend tpm (%s): %w", cfg.TPMDevice, err)
		}
		return s, nil
	case "auto":
		var why []string
		if s, err := cpacf.New(); err == nil {
			log.Info("sealer chosen", "sealer", "cpacf", "backend", "auto")
			return s, nil
		} else {
			why = append(why, "cpacf: "+err.Error())
		}
		if s, err := openTPM(cfg.TPMDevice); err == nil {
			log.Info("sealer chosen", "sealer", "tpm", "backend", "auto", "not_chosen", strings.Join(why, "; "))
			return s, nil
		} else {
			why = append(why, "tpm: "+err.Error())
		}
		s, err := memorySealer()
		if err != nil {
			return nil, err
		}
		log.Info("sealer chosen", "sealer", "memory", "backend", "auto", "not_chosen", strings.Join(why, "; "))
		return s, nil
	}
	return nil, fmt.Errorf("unknown sealer backend %q", cfg.Backend)
}

func memorySealer() (seal.Sealer, error) {
	s, err := seal.NewMemory()
	if err != nil {
		return nil, fmt.Errorf("memory sealer: %w", err)
	}
	return s, nil
}

// openTPM opens the TPM backend on the resource manager device.
func openTPM(device string) (seal.Sealer, error) {
	s, err := tpm.Open(device)
	if err != nil {
		return nil, err
	}
	return s, nil
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

func uint32s(in []int) []uint32 {
	out := make([]uint32, 0, len(in))
	for _, v := range in {
		out = append(out, uint32(v))
	}
	return out
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
	kpc, err := keyprotect.New(keyprotect.Config{
		URL: cfg.KeyProtect.URL, TokenURL: cfg.KeyProtect.TokenURL(), InstanceID: cfg.KeyProtect.InstanceID,
		KeyRing: cfg.KeyProtect.KeyRing, RootKeyID: cfg.KeyProtect.RootKeyID, APIKey: apiKey.Reveal(),
		CAFile: cfg.KeyProtect.CAFile, Timeout: time.Duration(cfg.KeyProtect.Timeout),
	})
	if err != nil {
		return err
	}
	defer kpc.Close()
	store, err := wdek.Open(cfg.State.Dir)
	if err != nil {
		return err
	}
	defer store.Close()
	sealer, err := newSealer(cfg.Sealer, log)
	if err != nil {
		return err
	}
	defer sealer.Close()

	mt := metrics.New()
	sd := notify.New()
	runner := actions.New(lockActions(cfg), log)
	machine := lock.New(lock.Status{RootKeyID: cfg.KeyProtect.RootKeyID, Sealer: sealer.Name(), Generation: 1}, lock.Hooks{
		Wipe: sealer.Wipe,
		Transition: func(from, to lock.Status, ev lock.Event) {
			mt.SetState(to.State.String())
			// Every successful check fires a transition; systemd hears
			// only of a changed status line.
			if line := statusLine(to); line != statusLine(from) {
				sd.Status(line)
			}
			if from.State == to.State {
				return
			}
			attrs := []any{"event", "audit", "action", "transition", "from", from.State.String(), "state", to.State.String(),
				"reason", to.Reason, "root_key_id", to.RootKeyID}
			switch to.State {
			case lock.Locked:
				mt.Locked(to.Reason)
				log.Warn("node locked: keys wiped", attrs...)
				go runner.Run(context.WithoutCancel(ctx), to.Reason)
			case lock.Degraded:
				log.Warn("node degraded: Key Protect unreachable, serving within the offline grace", attrs...)
			default:
				log.Info("node "+to.State.String(), attrs...)
			}
		},
	})
	mt.SetState(lock.Starting.String())

	sock, activated, err := listen(cfg, log)
	if err != nil {
		return err
	}
	var release, strict bool
	for _, m := range cfg.Socket.Modes {
		release = release || m == "release"
		strict = strict || m == "strict"
	}
	var hb notify.Heartbeat
	hb.Beat()
	p := poller.New(poller.Config{
		KP: kpc, Store: store, Sealer: sealer, Machine: machine,
		RootKeyID: cfg.KeyProtect.RootKeyID, InstanceID: cfg.KeyProtect.InstanceID, ClusterID: cfg.ClusterID,
		Provision: cfg.State.Provision, Interval: time.Duration(cfg.Poll.Interval), Jitter: cfg.Poll.Jitter,
		ProofInterval: time.Duration(cfg.Poll.ProofInterval), OfflineGrace: time.Duration(cfg.Poll.OfflineGrace),
		LockOnExpired: cfg.Poll.LockOnExpired, Log: log, Metrics: mt, Beat: hb.Beat,
	})
	srv := server.New(server.Config{
		ClusterID: cfg.ClusterID, Keys: sealer, Machine: machine, Release: release, Strict: strict, Log: log, Metrics: mt,
		Policy: server.Policy{UIDs: uint32s(cfg.Socket.AllowedUIDs), GIDs: uint32s(cfg.Socket.AllowedGIDs), Exes: cfg.Socket.AllowedExes},
		Reseal: p.Reseal,
	})
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(sock) }()

	var opsSrv *ops.Server
	opsAddr := ""
	if cfg.Ops.Listen != "" {
		opsSrv, err = ops.Listen(cfg.Ops.Listen, machine, mt)
		if err != nil {
			srv.Stop(context.Background())
			return fmt.Errorf("ops listener: %w", err)
		}
		opsAddr = opsSrv.Addr()
		go func() { serveErr <- opsSrv.Serve() }()
	}
	log.Info("byokd serving", "version", Version, "socket", cfg.Socket.Path, "socket_activated", activated, "ops", opsAddr,
		"sealer", sealer.Name(), "root_key_id", cfg.KeyProtect.RootKeyID, "instance_id", cfg.KeyProtect.InstanceID,
		"cluster_id", cfg.ClusterID)
	sd.Ready(statusLine(machine.Status()))
	if opt.Ready != nil {
		opt.Ready(cfg.Socket.Path, opsAddr)
	}

	// The poller is the main loop: while it beats, the systemd watchdog is
	// fed and /healthz is 200. A round can take two Key Protect calls.
	maxAge := 2*time.Duration(cfg.KeyProtect.Timeout) + 10*time.Second
	alive := func() bool { return hb.Fresh(maxAge) }
	if opsSrv != nil {
		opsSrv.SetAlive(alive)
	}
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	if wd := notify.WatchdogInterval(); wd > 0 {
		log.Info("systemd watchdog on", "interval", wd, "main_loop_max_age", maxAge)
		go sd.Watchdog(wdCtx, wd, alive)
	}

	pctx, stopPoller := context.WithCancel(ctx)
	pollDone := make(chan struct{})
	go func() { defer close(pollDone); p.Run(pctx) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	log.Info("byokd stopping")
	sd.Stopping()
	stopWatchdog()
	stopPoller()
	<-pollDone
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Stop(sctx)
	_ = sock.Close()
	if opsSrv != nil {
		_ = opsSrv.Shutdown(sctx)
	}
	if err := sealer.Wipe(sctx); err != nil && !errors.Is(err, seal.ErrWiped) {
		log.Error("wipe keys at stop", "err", err)
	}
	log.Info("byokd stopped", "event", "audit", "action", "stop")
	return runErr
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

func lockActions(cfg *config.Config) []actions.Action {
	var out []actions.Action
	for _, a := range cfg.LockActions {
		out = append(out, actions.Action{Command: a.Command, Timeout: time.Duration(a.Timeout)})
	}
	return out
}
