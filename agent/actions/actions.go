// SPDX-License-Identifier: Apache-2.0

// Package actions runs the operator's lock actions (e.g. stop the database
// unit) when the node locks, and unlock actions (start it again) when it
// serves keys again, each with a timeout, logging their output.
package actions

import (
	"bytes"
	"context"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/byokd/byokd/agent/audit"
)

// Action is one command; Command[0] is an absolute path. It runs without a
// shell, with an empty environment but PATH.
type Action struct {
	Command []string
	Timeout time.Duration
}

const maxOutput = 16 << 10

// Kind says when actions run.
type Kind int

const (
	// OnLock: the node locked.
	OnLock Kind = iota
	// OnUnlock: the node serves keys again after a lock.
	OnUnlock
)

// Runner runs the actions, one at a time and in the order they were
// queued, so that a key disabled and enabled in quick succession runs the
// lock actions and then the unlock actions, never the other way round.
type Runner struct {
	lock, unlock []Action
	log          *slog.Logger

	mu      sync.Mutex
	queue   []job
	running bool // a goroutine drains the queue
}

type job struct {
	kind   Kind
	reason string
}

// New returns a runner for the lock and unlock actions.
func New(lock, unlock []Action, log *slog.Logger) *Runner {
	return &Runner{lock: lock, unlock: unlock, log: log}
}

// Queue has the actions of kind run after those queued before, and
// returns at once. reason is logged with each; it is not passed to the
// commands.
func (r *Runner) Queue(kind Kind, reason string) {
	list := r.lock
	if kind == OnUnlock {
		list = r.unlock
	}
	if len(list) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = append(r.queue, job{kind, reason})
	if !r.running {
		r.running = true
		go r.drain()
	}
}

func (r *Runner) drain() {
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		j := r.queue[0]
		r.queue = r.queue[1:]
		r.mu.Unlock()
		list := r.lock
		if j.kind == OnUnlock {
			list = r.unlock
		}
		for _, a := range list {
			r.run(context.Background(), j.kind, a, j.reason)
		}
	}
}

func (r *Runner) run(ctx context.Context, kind Kind, a Action, reason string) {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.Command[0], a.Command[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.WaitDelay = 2 * time.Second
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	fields := []audit.Field{audit.Command(a.Command), audit.Reason(reason),
		audit.Duration(time.Since(start).Round(time.Millisecond)), audit.Output(out.String())}
	what, action := "lock action", audit.LockAction
	if kind == OnUnlock {
		what, action = "unlock action", audit.UnlockAction
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			audit.Error(r.log, what+" timed out", action, append(fields, audit.Timeout(timeout))...)
			return
		}
		audit.Error(r.log, what+" failed", action, append(fields, audit.Err(err))...)
		return
	}
	audit.Info(r.log, what+" ran", action, fields...)
}

// limitedBuffer keeps the first maxOutput bytes of a command's output.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	cut bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxOutput - b.buf.Len(); room < len(p) {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.cut = true
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if b.cut {
		s += "…(truncated)"
	}
	return s
}
