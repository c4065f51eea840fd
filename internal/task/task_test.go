// SPDX-License-Identifier: Apache-2.0

package task

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFirstErrorCancelsTheRestAndIsReturned(t *testing.T) {
	boom := errors.New("boom")
	stopped := make(chan struct{})
	err := Run(context.Background(),
		func(ctx context.Context) error { <-ctx.Done(); close(stopped); return ctx.Err() },
		func(ctx context.Context) error { time.Sleep(10 * time.Millisecond); return boom },
	)
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want boom", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the other task stopped")
	}
}

func TestEndOfContextEndsEveryTaskWithoutError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx,
			func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			func(ctx context.Context) error { <-ctx.Done(); return nil },
		)
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the context ended")
	}
}
