// SPDX-License-Identifier: Apache-2.0

// Command byokd-dev runs byokd for development (`make run`): byokd's own
// daemon code with an in-process Key Protect emulator, the memory sealer
// and a config it writes itself, everything in one folder (.dev/). It is
// never packaged: the production byokd links no emulator.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/daemon"
	"github.com/byokd/byokd/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "byokd-dev:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("byokd-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devDir := fs.String("dev-dir", ".dev", "the dev folder: emulator state, config, wrapped key, socket")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "byokd-dev", version.Version)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	log := daemon.NewLogger(config.Log{Level: "info", Format: "text"}, stderr)
	d, err := Setup(*devDir, log)
	if err != nil {
		return err
	}
	defer d.Close()
	return daemon.Run(ctx, d.Config, daemon.Options{
		Log: log,
		Ready: func(l daemon.Listening) {
			// kmip.env is written once the port answers, after Run starts
			// serving it.
			go func() {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := WriteKMIPEnv(wctx, d.Dir, l.KMIP, d.KMIP); err != nil {
					log.Error("write kmip.env", "err", err)
				}
			}()
			fmt.Fprintf(stdout, `
byokd-dev is running. Everything lives in %[1]s/ (delete it to start afresh).
  Key Protect emulator  %[2]s   (root key %[3]s)
  key provider socket   %[4]s
  probes and metrics    http://%[5]s/readyz  /metrics

In a second terminal, from this checkout:
  bin/byokctl status                 # the node's state; --json for scripts
  bin/byokctl watch                  # follow every change
  . %[1]s/kpemu.env                # the emulator's KP_URL, KP_API_KEY, KP_INSTANCE_ID, KP_ROOT_KEY_ID
  bin/kpemu ctl disable              # disable the root key: the node locks within 2 s
  bin/kpemu ctl enable               # enable it again: the node unlocks
  bin/kpemu ctl delete               # delete it: locked (bin/kpemu ctl restore brings it back)

KMIP, as Percona Server for MongoDB or MongoDB Enterprise would use it:
  KMIP server           %[6]s   (TLS, client certificates from %[1]s/kmip/)
  . %[1]s/kmip.env                 # KMIP_HOST, KMIP_PORT, KMIP_CA, KMIP_CLIENT_CERT, KMIP_CLIENT_KEY
  /usr/bin/python3 e2e/testdata/pykmip_driver.py create demo get @ state @   # PyKMIP (apt install python3-pykmip)
  (docs/kmip.md has the mongod.conf; kmip.env appears once the port answers)

Stop with Ctrl-C.
`, *devDir, d.Env.URL, d.Env.RootKeyID, l.Socket, l.Ops, l.KMIP)
		},
	})
}
