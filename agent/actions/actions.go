// SPDX-License-Identifier: Apache-2.0

// Package actions runs the operator's lock actions (e.g. stop the database
// unit) when the node locks, each with a timeout, logging their output.
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

// Runner runs the actions; one run at a time, so a flapping key does not
// stack up commands.
type Runner struct {
	actions []Action
	log     *slog.Logger
	mu      sync.Mutex
}

// New returns a runner for the actions.
func New(actions []Action, log *slog.Logger) *Runner {
	return &Runner{actions: actions, log: log}
}

// Run runs every action in order and waits for them. reason is logged with
// each; it is not passed to the commands.
func (r *Runner) Run(ctx context.Context, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.actions {
		r.run(ctx, a, reason)
	}
}

func (r *Runner) run(ctx context.Context, a Action, reason string) {
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
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			audit.Error(r.log, "lock action timed out", audit.LockAction, append(fields, audit.Timeout(timeout))...)
			return
		}
		audit.Error(r.log, "lock action failed", audit.LockAction, append(fields, audit.Err(err))...)
		return
	}
	audit.Info(r.log, "lock action ran", audit.LockAction, fields...)
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
