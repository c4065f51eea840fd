// SPDX-License-Identifier: Apache-2.0

// Package task runs a daemon's long-lived parts together: when the first
// one returns, the others are cancelled, and Run waits for all of them.
package task

import (
	"context"
	"errors"
	"sync"
)

// Task runs until ctx ends or it fails. A task that returns nil before ctx
// ends has finished its work, and ends the others too.
type Task func(ctx context.Context) error

// Run starts every task and waits until all have returned. The first to
// return cancels the rest; Run returns the first error (nil when the first
// task ended without one, as all do when ctx ends).
func Run(ctx context.Context, tasks ...Task) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, t := range tasks {
		wg.Go(func() {
			err := t(ctx)
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				err = nil
			}
			once.Do(func() { first = err })
			cancel()
		})
	}
	wg.Wait()
	return first
}
