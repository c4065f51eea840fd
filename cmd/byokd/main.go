// SPDX-License-Identifier: Apache-2.0

// Command byokd is the node agent: it unwraps the node's data encryption
// key through Key Protect, keeps it sealed, serves derived keys on a unix
// socket and locks when the customer's root key goes away.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/daemon"
	"github.com/byokd/byokd/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "byokd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("byokd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	showVersion := fs.Bool("version", false, "print the version and exit")
	for _, a := range args {
		// Earlier releases had --dev: say where it went.
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && (name == "dev" || name == "dev-dir") {
			return fmt.Errorf("%s: byokd has no dev mode (the production daemon links no Key Protect emulator); in a checkout, `make run` runs bin/byokd-dev", a)
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "byokd", version.Version)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	return daemon.Run(ctx, cfg, daemon.Options{})
}
