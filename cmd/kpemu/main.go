// SPDX-License-Identifier: Apache-2.0

// Command kpemu runs a local IBM Key Protect + IAM emulator for development,
// demos and tests. See docs/kpemu.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/byokd/byokd/kpemu"
	"github.com/byokd/byokd/version"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kpemu:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ctl" {
		return ctl(args[1:], stdout)
	}
	fs := flag.NewFlagSet("kpemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var apiKeys multiFlag
	addr := fs.String("addr", "127.0.0.1:8787", "listen address (port 0 picks a free port)")
	fs.Var(&apiKeys, "api-key", "IAM API key the token endpoint accepts (repeatable; or $KPEMU_API_KEY)")
	instance := fs.String("instance-id", "", "Key Protect instance id (a UUID)")
	state := fs.String("state", "", "file that keeps keys across restarts")
	ttl := fs.Duration("token-ttl", time.Hour, "IAM access token lifetime")
	certFile := fs.String("tls-cert", "", "TLS certificate file (serves HTTPS with --tls-key)")
	keyFile := fs.String("tls-key", "", "TLS private key file")
	actionCooldown := fs.Duration("action-cooldown", 30*time.Second, "wait the service enforces before enable/restore after a state change (0 turns it off)")
	rotateCooldown := fs.Duration("rotate-cooldown", time.Hour, "minimum time between rotations of one key (0 turns it off)")
	month := fs.Duration("month", 30*24*time.Hour, "how long a rotation policy's month lasts (shorten it to see policy rotations)")
	quiet := fs.Bool("quiet", false, "do not log each request")
	rateLimit := fs.Float64("rate-limit", 0, "Key Protect requests per second the instance accepts before answering 429 (0: no limit)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "kpemu", version.Version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(apiKeys) == 0 {
		if k := os.Getenv("KPEMU_API_KEY"); k != "" {
			apiKeys = append(apiKeys, k)
		}
	}
	if len(apiKeys) == 0 {
		return errors.New("--api-key is required")
	}
	if *instance == "" {
		return errors.New("--instance-id is required")
	}
	if *month <= 0 {
		return errors.New("--month must be a positive duration")
	}
	if (*certFile == "") != (*keyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if *quiet {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := kpemu.Config{
		InstanceID:     *instance,
		APIKeys:        apiKeys,
		TokenTTL:       *ttl,
		StatePath:      *state,
		ActionCooldown: offIfZero(*actionCooldown),
		RotateCooldown: offIfZero(*rotateCooldown),
		MonthLength:    *month,
		Logger:         logger,
	}
	in, err := kpemu.Listen(cfg, *addr, *certFile, *keyFile)
	if err != nil {
		return err
	}
	if *rateLimit != 0 {
		if err := in.SetFaults(kpemu.Faults{RateLimit: *rateLimit}); err != nil {
			_ = in.Close(context.Background())
			return fmt.Errorf("--rate-limit: %w", err)
		}
	}
	fmt.Fprintf(stdout, "kpemu listening on %s\n", in.URL)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case err := <-in.Done():
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return in.Close(shutdown)
}

// offIfZero maps the command line's "0 turns it off" onto Config, where zero
// means the default and a negative value turns the check off.
func offIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
