// SPDX-License-Identifier: Apache-2.0

// Package node assembles one byokd node below the process — Key Protect
// client, wrapped key store, sealer, lock machine, key manager and its
// scheduler, key provider server, ops listener, lock actions — from a
// configuration, and runs it. The daemon, the fleet simulation and tests
// build nodes through it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/byokd/byokd/agent/actions"
	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/keymgr"
	"github.com/byokd/byokd/agent/keyprotect"
	"github.com/byokd/byokd/agent/kmipd"
	"github.com/byokd/byokd/agent/kmiptls"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
	"github.com/byokd/byokd/agent/notify"
	"github.com/byokd/byokd/agent/ops"
	"github.com/byokd/byokd/agent/server"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/seal/cpacf"
	"github.com/byokd/byokd/crypto/seal/tpm"
	"github.com/byokd/byokd/internal/clock"
	"github.com/byokd/byokd/internal/task"
)

// Deps are what a node takes from its caller instead of building it from
// the configuration. Every field is optional.
type Deps struct {
	// KeyProtect replaces the client built from [keyprotect].
	KeyProtect keymgr.KeyProtect
	// APIKey is the IAM API key; empty reads the one the config names.
	APIKey string
	// Sealer replaces the backend [sealer] picks; the node closes it.
	Sealer seal.Sealer
	// Listener is the key provider socket; nil serves no key provider.
	Listener net.Listener
	// NoOps turns the ops listener off whatever [ops] says.
	NoOps   bool
	Clock   clock.Clock
	Rand    func(n int64) int64
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// OnTransition is called after every state change, after the node's
	// own audit log, metrics and lock actions.
	OnTransition func(from, to lock.Status, ev lock.Event)
}

// Node is one byokd node.
type Node struct {
	Machine   *lock.Machine
	Manager   *keymgr.Manager
	Scheduler *keymgr.Scheduler
	Server    *server.Server // nil without a listener
	Ops       *ops.Server    // nil when off
	KMIP      *kmipd.Server  // nil when [kmip] is off
	Metrics   *metrics.Metrics

	cfg      *config.Config
	log      *slog.Logger
	sealer   seal.Sealer
	store    *wdek.Store
	kpc      *keyprotect.Client // nil when Deps gave one
	listener net.Listener
	kmipLn   net.Listener
	hb       notify.Heartbeat
	closers  []func()
}

// New builds a node from cfg; it contacts nothing until Run. Close it.
func New(cfg *config.Config, deps Deps) (_ *Node, err error) {
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mt := deps.Metrics
	if mt == nil {
		mt = metrics.New()
	}
	n := &Node{cfg: cfg, log: log, Metrics: mt, listener: deps.Listener}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.sealer = deps.Sealer
	if n.sealer == nil {
		if n.sealer, err = NewSealer(cfg.Sealer, log); err != nil {
			return nil, err
		}
	}
	n.closers = append(n.closers, func() {
		if err := n.sealer.Close(); err != nil {
			log.Error("close the sealer", "err", err)
		}
	})
	kp := deps.KeyProtect
	if kp == nil {
		apiKey := deps.APIKey
		if apiKey == "" {
			k, err := cfg.LoadAPIKey()
			if err != nil {
				return nil, err
			}
			apiKey = k.Reveal()
		}
		if n.kpc, err = keyprotect.New(keyprotect.Config{
			URL: cfg.KeyProtect.URL, TokenURL: cfg.KeyProtect.TokenURL(), InstanceID: cfg.KeyProtect.InstanceID,
			KeyRing: cfg.KeyProtect.KeyRing, RootKeyID: cfg.KeyProtect.RootKeyID, APIKey: apiKey,
			CAFile: cfg.KeyProtect.CAFile, Timeout: time.Duration(cfg.KeyProtect.Timeout), Log: log,
		}); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, n.kpc.Close)
		kp = n.kpc
	}
	if n.store, err = wdek.Open(cfg.State.Dir); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { n.store.Close() })

	runner := actions.New(commands(cfg.LockActions), commands(cfg.UnlockActions), log)
	n.Machine = lock.New(lock.Status{RootKeyID: cfg.KeyProtect.RootKeyID, Sealer: n.sealer.Name()}, lock.Hooks{
		Wipe: n.sealer.Wipe,
		Transition: func(from, to lock.Status, ev lock.Event) {
			n.transition(from, to, runner)
			if deps.OnTransition != nil {
				deps.OnTransition(from, to, ev)
			}
		},
	})
	c := deps.Clock
	if c == nil {
		c = clock.Real()
	}
	n.Machine.SetClock(c.Now)
	mt.SetState(lock.Starting.String())
	n.Manager = keymgr.New(keymgr.Config{
		KP: kp, Store: n.store, Sealer: n.sealer, Machine: n.Machine,
		RootKeyID: cfg.KeyProtect.RootKeyID, InstanceID: cfg.KeyProtect.InstanceID, ClusterID: cfg.ClusterID,
		Provision: cfg.State.Provision, ProofInterval: time.Duration(cfg.Poll.ProofInterval),
		OfflineGrace: time.Duration(cfg.Poll.OfflineGrace), ConfirmWindow: time.Duration(cfg.Poll.ConfirmWindow),
		LockOnExpired: cfg.Poll.LockOnExpired, Clock: c, Log: log, Metrics: mt,
		WipeTimeout: wipeTimeout, RoundTimeout: n.roundTimeout(),
	})
	n.hb.Beat()
	n.Scheduler = keymgr.NewScheduler(n.Manager, keymgr.SchedulerConfig{
		Interval: time.Duration(cfg.Poll.Interval), Jitter: cfg.Poll.Jitter, Beat: n.hb.Beat, Rand: deps.Rand,
	})
	if deps.Listener != nil {
		var release, strict bool
		for _, m := range cfg.Socket.Modes {
			release = release || m == string(keyprovider.Release)
			strict = strict || m == string(keyprovider.Strict)
		}
		n.Server = server.New(server.Config{
			ClusterID: cfg.ClusterID, Keys: n.sealer, Machine: n.Machine, Release: release, Strict: strict, Log: log, Metrics: mt,
			Policy: server.Policy{UIDs: uint32s(cfg.Socket.AllowedUIDs), GIDs: uint32s(cfg.Socket.AllowedGIDs)},
			Reseal: n.Manager.Reseal, Admin: n.Manager,
		})
	}
	if cfg.KMIP.Enabled {
		if err := n.newKMIP(log); err != nil {
			return nil, err
		}
	}
	if cfg.Ops.Listen != "" && !deps.NoOps {
		if n.Ops, err = ops.Listen(cfg.Ops.Listen, n.Machine, mt); err != nil {
			return nil, fmt.Errorf("ops listener: %w", err)
		}
		n.Ops.SetAlive(n.Alive)
		n.closers = append(n.closers, func() { n.Ops.Shutdown(context.Background()) })
	}
	return n, nil
}

// kmipDir is where the KMIP objects of a node with state folder stateDir
// live.
func kmipDir(stateDir string) string { return filepath.Join(stateDir, "kmip") }

// newKMIP opens the KMIP store and listener of [kmip].
func (n *Node) newKMIP(log *slog.Logger) error {
	k := n.cfg.KMIP
	tlsCfg, err := kmiptls.Load(kmiptls.Files{CAFile: k.CAFile, CertFile: k.CertFile, KeyFile: k.KeyFile, Allowed: k.AllowedClients})
	if err != nil {
		return err
	}
	store, err := kmipd.OpenStore(kmipDir(n.cfg.State.Dir), n.cfg.ClusterID, n.sealer, n.Machine)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, func() { store.Close() })
	store.Reseal = n.Manager.Reseal
	if n.kmipLn, err = net.Listen("tcp", k.Listen); err != nil {
		return fmt.Errorf("kmip listener: %w", err)
	}
	n.closers = append(n.closers, func() { n.kmipLn.Close() })
	n.KMIP = kmipd.NewServer(kmipd.Config{Store: store, TLS: tlsCfg, Log: log, Metrics: n.Metrics})
	log.Info("kmip server listening", "addr", n.kmipLn.Addr().String(), "allowed_clients", k.AllowedClients,
		"objects", store.Len())
	return nil
}

// KMIPAddr is the KMIP listener's address, "" when [kmip] is off.
func (n *Node) KMIPAddr() string {
	if n.kmipLn == nil {
		return ""
	}
	return n.kmipLn.Addr().String()
}

// transition is the node's own reaction to a state change: metrics, the
// audit log, and the lock actions.
func (n *Node) transition(from, to lock.Status, runner *actions.Runner) {
	n.Metrics.SetState(to.State.String())
	if from.State == to.State && from.WipeError == to.WipeError {
		return
	}
	fields := []audit.Field{audit.From(from.State.String()), audit.State(to.State.String()),
		audit.Reason(to.Reason), audit.Cause(to.Cause), audit.RootKeyID(to.RootKeyID)}
	switch {
	case to.State == lock.Locked && to.WipeError != "":
		audit.Error(n.log, "node locked, but the keys could NOT be wiped; key calls are refused and byokd retries the wipe",
			audit.Transition, append(fields, audit.WipeError(to.WipeError))...)
	case to.State == lock.Locked:
		audit.Warn(n.log, "node locked: keys wiped", audit.Transition, fields...)
	case to.State == lock.Degraded:
		audit.Warn(n.log, "node degraded: serving within the offline grace or the confirmation window", audit.Transition, fields...)
	default:
		audit.Info(n.log, "node "+to.State.String(), audit.Transition, fields...)
	}
	if to.State == lock.Locked && from.State != lock.Locked {
		n.Metrics.Locked(to.Cause)
		runner.Queue(actions.OnLock, to.Reason)
	}
	if from.State == lock.Locked && to.State.Serving() {
		runner.Queue(actions.OnUnlock, "keys served again")
	}
}

// wipeTimeout bounds a wipe of the sealed keys.
const wipeTimeout = 10 * time.Second

// roundTimeout bounds a round of the key manager: three Key Protect calls
// (a check that finds a rotation reads metadata, then proves with metadata
// and an unwrap), each with its token.
func (n *Node) roundTimeout() time.Duration { return 3 * time.Duration(n.cfg.KeyProtect.Timeout) }

// MainLoopMaxAge is how long the key manager's loop may go without a beat
// before the node counts as not alive: the longest round, its wipes, and
// some slack. At the default 10 s timeout that is 50 s, within the unit's
// 60 s WatchdogSec.
func (n *Node) MainLoopMaxAge() time.Duration {
	return n.roundTimeout() + 2*wipeTimeout
}

// Alive reports whether the key manager's loop beats.
func (n *Node) Alive() bool { return n.hb.Fresh(n.MainLoopMaxAge()) }

// Addr is the ops listener's address, "" when it is off.
func (n *Node) Addr() string {
	if n.Ops == nil {
		return ""
	}
	return n.Ops.Addr()
}

// Run runs the node until ctx ends or a part fails, then stops cleanly:
// key calls in flight finish, watchers are told, keys are wiped.
func (n *Node) Run(ctx context.Context) error {
	tasks := []task.Task{n.Scheduler.Run}
	if n.Server != nil {
		tasks = append(tasks, func(ctx context.Context) error {
			return serveUntil(ctx, func() error { return n.Server.Serve(n.listener) }, n.Server.Stop)
		})
	}
	if n.KMIP != nil {
		tasks = append(tasks, func(ctx context.Context) error {
			return serveUntil(ctx, func() error { return n.KMIP.Serve(n.kmipLn) }, n.KMIP.Shutdown)
		})
	}
	if n.Ops != nil {
		tasks = append(tasks, func(ctx context.Context) error {
			return serveUntil(ctx, n.Ops.Serve, func(ctx context.Context) { _ = n.Ops.Shutdown(ctx) })
		})
	}
	err := task.Run(ctx, tasks...)
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if werr := n.sealer.Wipe(wctx); werr != nil && !errors.Is(werr, seal.ErrWiped) {
		n.log.Error("wipe keys at stop", "err", werr)
	}
	return err
}

// serveUntil runs serve until it fails or ctx ends, then stops it with
// five seconds for calls in flight.
func serveUntil(ctx context.Context, serve func() error, stop func(context.Context)) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stop(sctx)
		<-errc
		return nil
	}
}

// Close releases what New opened: the sealer (wiping it), the store, the
// Key Protect client's connections, the ops listener.
func (n *Node) Close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// NewSealer picks the backend. backend = "auto" tries cpacf (s390x with
// /dev/pkey and CPACF HMAC protected keys), then tpm (tpm_device opens),
// then memory, and logs the choice and why; an explicitly configured
// backend that is not available is an error, never a silent downgrade.
func NewSealer(cfg config.Sealer, log *slog.Logger) (seal.Sealer, error) {
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
		s, err := tpm.Open(cfg.TPMDevice)
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
		if s, err := tpm.Open(cfg.TPMDevice); err == nil {
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

func uint32s(in []int) []uint32 {
	out := make([]uint32, 0, len(in))
	for _, v := range in {
		out = append(out, uint32(v))
	}
	return out
}

func commands(as []config.LockAction) []actions.Action {
	var out []actions.Action
	for _, a := range as {
		out = append(out, actions.Action{Command: a.Command, Timeout: time.Duration(a.Timeout)})
	}
	return out
}
