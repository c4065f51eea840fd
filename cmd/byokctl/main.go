// SPDX-License-Identifier: Apache-2.0

// Command byokctl is the operator's CLI for byokd: status, watch, health,
// wait, check-config, the key identity actions accept-key and forget-key,
// kmip (the certificates of byokd's KMIP server and its clients) and
// version.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/agent/kmiptls"
	"github.com/byokd/byokd/client/keyprovider"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
	"github.com/byokd/byokd/version"
)

const usage = `usage: byokctl [--socket PATH | --cluster NAME] COMMAND

Commands:
  status [--json]                  the node's lock state, root key, sealer, last check
  watch [--json]                   print every state change until interrupted
  health                           exit 0 only when keys are served (for probes)
  wait --unlocked [--timeout D]    wait until keys are served; exit 1 on timeout
  check-config [--credential F] FILE
                                   validate a byokd config file without starting, as
                                   byokd.service runs it (API key from the credential
                                   file F, default /etc/byokd/apikey, unless the config
                                   names keyprotect.api_key_file)
  accept-key CURRENT OFFERED       serve the other data key byokd refused: its wrapped
                                   key file unwraps to OFFERED, not to CURRENT, the key
                                   the node served (both as status shows them). Data
                                   written under CURRENT becomes unreadable. For root and
                                   byokd's own user only.
  forget-key CURRENT               give up the key of a locked node whose wrapped key
                                   is lost for good (no dek.json in place), so it can
                                   provision a new one. Data written under CURRENT stays
                                   unreadable. For root and byokd's own user only.
  kmip init [--dir D] [--host H]... --client NAME [--client NAME]...
       [--server-owner USER] [--client-owner USER]
                                   make the certificates of byokd's KMIP server in D
                                   (default /etc/byokd/kmip): a CA, the server's for the
                                   names H (default 127.0.0.1 and localhost), one client
                                   certificate per NAME (its Subject CN). server.key goes
                                   to USER (default byokd, when run as root), the client
                                   keys to --client-owner. Prints the [kmip] config and
                                   the mongod.conf for each client. Overwrites nothing.
  kmip add-client [--dir D] [--client-owner USER] NAME
                                   one more client certificate, from the CA in D
  version                          print the version

--cluster NAME reaches byokd@NAME (one cluster of several on the host) at
/run/byokd-NAME/keyprovider.sock, and check-config checks its credential
/etc/byokd/NAME.apikey. The socket defaults to .dev/keyprovider.sock when
run inside a checkout where
byokd-dev (make run) runs, else /run/byokd/keyprovider.sock.`

// exitError carries an exit code for main.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "byokctl:", ee.msg)
		}
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "byokctl:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("byokctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	socket := fs.String("socket", "", "byokd's key provider socket")
	cluster := fs.String("cluster", "", "the cluster whose byokd@NAME to reach, when the host runs several")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, usage)
		return &exitError{code: 2}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if *cluster != "" {
		if err := keyprovider.ValidClusterName(*cluster); err != nil {
			return &exitError{code: 2, msg: err.Error()}
		}
		if *socket != "" {
			return &exitError{code: 2, msg: "--socket and --cluster are one or the other"}
		}
		*socket = keyprovider.ClusterSocket(*cluster)
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "byokctl", version.Version)
		return nil
	case "check-config":
		return checkConfig(*cluster, rest, stdout)
	case "kmip":
		return kmip(rest, stdout, stderr)
	case "status", "watch", "health", "wait", "accept-key", "forget-key":
	default:
		fmt.Fprintln(stderr, usage)
		return &exitError{code: 2, msg: "unknown command " + cmd}
	}
	path := *socket
	if path == "" {
		path = defaultSocket()
	}
	c, err := keyprovider.Dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	switch cmd {
	case "status":
		return status(c, rest, stdout)
	case "watch":
		return watch(c, rest, stdout)
	case "health":
		return health(c, rest, stdout)
	case "accept-key":
		return acceptKey(c, rest, stdout)
	case "forget-key":
		return forgetKey(c, rest, stdout)
	default:
		return wait(c, rest, stdout)
	}
}

// defaultSocket finds .dev/keyprovider.sock in this directory or a parent,
// for a checkout running byokd-dev (make run).
func defaultSocket() string {
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, ".dev", "keyprovider.sock")
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
				return p
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return keyprovider.DefaultSocket
}

type statusJSON struct {
	State              string     `json:"state"`
	Reason             string     `json:"reason"`
	Cause              string     `json:"cause"`
	RootKeyID          string     `json:"root_key_id"`
	KeyVersion         string     `json:"key_version"`
	KeyFingerprint     string     `json:"key_fingerprint"`
	Generation         uint32     `json:"generation"`
	OperatorAction     string     `json:"operator_action"`
	OfferedFingerprint string     `json:"offered_fingerprint"`
	WipeError          string     `json:"wipe_error"`
	Sealer             string     `json:"sealer"`
	LastCheck          *time.Time `json:"last_check"`
	Warnings           []string   `json:"warnings"`
	Modes              []string   `json:"modes"`
}

func toJSON(s *pb.StatusResponse) statusJSON {
	j := statusJSON{
		State:      strings.TrimPrefix(s.GetState().String(), "STATE_"),
		Reason:     s.GetReason(),
		RootKeyID:  s.GetRootKeyId(),
		KeyVersion: s.GetKeyVersion(),
		Sealer:     s.GetSealer(),
		Warnings:   append([]string{}, s.GetWarnings()...),
		Modes:      append([]string{}, s.GetModes()...),
		Generation: s.GetGeneration(),

		Cause:              s.GetCause(),
		KeyFingerprint:     s.GetKeyFingerprint(),
		OperatorAction:     s.GetOperatorAction(),
		OfferedFingerprint: s.GetOfferedFingerprint(),
		WipeError:          s.GetWipeError(),
	}
	if s.GetLastCheck() != nil {
		t := s.GetLastCheck().AsTime()
		j.LastCheck = &t
	}
	return j
}

func printStatus(w io.Writer, s *pb.StatusResponse, asJSON bool) error {
	j := toJSON(s)
	if asJSON {
		return json.NewEncoder(w).Encode(j)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	last := "never"
	if j.LastCheck != nil {
		last = fmt.Sprintf("%s (%s ago)", j.LastCheck.Local().Format(time.RFC3339), time.Since(*j.LastCheck).Round(time.Second))
	}
	reason := j.Reason
	if reason == "" {
		reason = "-"
	}
	fmt.Fprintf(tw, "state\t%s\n", j.State)
	fmt.Fprintf(tw, "reason\t%s\n", reason)
	fmt.Fprintf(tw, "root key\t%s\n", j.RootKeyID)
	fmt.Fprintf(tw, "key version\t%s\n", j.KeyVersion)
	key := "none recorded yet"
	if j.KeyFingerprint != "" {
		key = fmt.Sprintf("%s (generation %d)", j.KeyFingerprint, j.Generation)
	}
	fmt.Fprintf(tw, "data key\t%s\n", key)
	if j.OfferedFingerprint != "" {
		fmt.Fprintf(tw, "refused key\t%s\n", j.OfferedFingerprint)
	}
	fmt.Fprintf(tw, "sealer\t%s\n", j.Sealer)
	fmt.Fprintf(tw, "modes\t%s\n", strings.Join(j.Modes, ", "))
	fmt.Fprintf(tw, "last check\t%s\n", last)
	for _, warn := range j.Warnings {
		fmt.Fprintf(tw, "WARNING\t%s\n", warn)
	}
	if j.WipeError != "" {
		fmt.Fprintf(tw, "WIPE FAILED\t%s\n", j.WipeError)
	}
	if j.OperatorAction != "" {
		fmt.Fprintf(tw, "ACTION NEEDED\t%s\n", j.OperatorAction)
	}
	return tw.Flush()
}

func status(c *keyprovider.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return printStatus(w, s, *asJSON)
}

func watch(c *keyprovider.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per change")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	stream, err := c.Watch(context.Background(), &pb.WatchRequest{})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		if *asJSON {
			if err := json.NewEncoder(w).Encode(toJSON(m.GetStatus())); err != nil {
				return err
			}
			continue
		}
		j := toJSON(m.GetStatus())
		fmt.Fprintf(w, "%s  %-9s %s\n", time.Now().Format(time.TimeOnly), j.State, j.Reason)
	}
}

func health(c *keyprovider.Client, args []string, w io.Writer) error {
	if len(args) > 0 {
		return &exitError{code: 2, msg: "health takes no arguments"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return &exitError{code: 1, msg: "health: " + err.Error()}
	}
	fmt.Fprintln(w, r.GetStatus().String())
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return &exitError{code: 1}
	}
	return nil
}

func wait(c *keyprovider.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	unlocked := fs.Bool("unlocked", false, "wait until keys are served (UNLOCKED, or DEGRADED within the offline grace)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: wait forever)")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	if !*unlocked {
		return &exitError{code: 2, msg: "wait needs --unlocked"}
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	last := "byokd not reachable"
	for {
		// Reconnect until byokd answers: the database unit may start first.
		stream, err := c.Watch(ctx, &pb.WatchRequest{}, grpc.WaitForReady(true))
		if err == nil {
			for {
				m, err := stream.Recv()
				if err != nil {
					break
				}
				st := m.GetStatus().GetState()
				if keyprovider.Serving(st) {
					fmt.Fprintln(w, strings.TrimPrefix(st.String(), "STATE_"))
					return nil
				}
				last = strings.TrimPrefix(st.String(), "STATE_") + ": " + m.GetStatus().GetReason()
			}
		}
		select {
		case <-ctx.Done():
			return &exitError{code: 1, msg: "timed out waiting for keys; last state " + last}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func acceptKey(c *keyprovider.Client, args []string, w io.Writer) error {
	if len(args) != 2 {
		return &exitError{code: 2, msg: "usage: byokctl accept-key CURRENT OFFERED (the fingerprints byokctl status shows as data key and refused key)"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.AcceptKey(ctx, &pb.AcceptKeyRequest{CurrentFingerprint: args[0], OfferedFingerprint: args[1]})
	if err != nil {
		return &exitError{code: 1, msg: "accept-key: " + grpcMessage(err)}
	}
	fmt.Fprintf(w, "byokd now serves data key %s (generation %d) in place of %s; data written under %s is no longer readable on this node.\n",
		r.GetKeyFingerprint(), r.GetGeneration(), args[0], args[0])
	return nil
}

func forgetKey(c *keyprovider.Client, args []string, w io.Writer) error {
	if len(args) != 1 {
		return &exitError{code: 2, msg: "usage: byokctl forget-key CURRENT (the fingerprint byokctl status shows as data key)"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ForgetKey(ctx, &pb.ForgetKeyRequest{CurrentFingerprint: args[0]}); err != nil {
		return &exitError{code: 1, msg: "forget-key: " + grpcMessage(err)}
	}
	fmt.Fprintf(w, "byokd gave up data key %s; data written under it is no longer readable on this node. "+
		"It provisions a new key if state.provision = true, or serves the key its wrapped key file holds.\n", args[0])
	return nil
}

// grpcMessage is an error's message without gRPC's "rpc error: code = ..."
// prefix, with the code in words.
func grpcMessage(err error) string {
	if e, ok := keyprovider.Err(err).(*keyprovider.Error); ok {
		return e.Msg + " (" + e.Code.String() + ")"
	}
	return err.Error()
}

// The API key as byokd.service hands it over: LoadCredential=kp-apikey:
// /etc/byokd/apikey, which systemd puts in the unit's credentials folder;
// byokd@NAME.service's is /etc/byokd/NAME.apikey
// (TestUnitHandsOverTheCredentialCheckConfigChecks keeps these in step with
// the units).
const (
	unitCredentialSource = "/etc/byokd/apikey"
	unitCredentialsDir   = "/run/credentials/byokd.service"
	credentialName       = "kp-apikey"
)

// clusterStateDir is byokd@NAME.service's StateDirectory: with
// DynamicUser=yes systemd keeps it in /var/lib/private, linked from
// /var/lib/byokd-NAME, and byokd follows no symlink to its state.
func clusterStateDir(cluster string) string { return "/var/lib/private/byokd-" + cluster }

func credentialOf(cluster string) (source, dir string) {
	if cluster == "" {
		return unitCredentialSource, unitCredentialsDir
	}
	return "/etc/byokd/" + cluster + ".apikey", "/run/credentials/byokd@" + cluster + ".service"
}

func checkConfig(cluster string, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(w)
	defSource, credDir := credentialOf(cluster)
	source := fs.String("credential", defSource, "the file byokd.service hands byokd as the credential "+credentialName+", checked when the config names no keyprotect.api_key_file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return &exitError{code: 2, msg: "usage: byokctl check-config [--credential FILE] FILE"}
	}
	path := fs.Arg(0)
	// Run from an operator's shell, there is no credentials folder: check
	// the config as byokd sees it under its unit, which has one.
	underUnit := os.Getenv("CREDENTIALS_DIRECTORY") == ""
	if underUnit {
		if err := os.Setenv("CREDENTIALS_DIRECTORY", credDir); err != nil {
			return err
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	if cluster != "" {
		// byokd@NAME.service's folders and socket are fixed by its units.
		if want := keyprovider.ClusterSocket(cluster); cfg.Socket.Path != want {
			return &exitError{code: 1, msg: fmt.Sprintf("%s: socket.path is %s; byokd@%s serves %s (byokd@.socket)", path, cfg.Socket.Path, cluster, want)}
		}
		if want := clusterStateDir(cluster); cfg.State.Dir != want {
			return &exitError{code: 1, msg: fmt.Sprintf("%s: state.dir is %s; byokd@%s keeps its state in %s (byokd@.service)", path, cfg.State.Dir, cluster, want)}
		}
	}
	if cfg.KMIP.Enabled {
		if cluster != "" {
			return &exitError{code: 1, msg: fmt.Sprintf("%s: [kmip] is on, but byokd@%s cannot serve KMIP (its dynamic user cannot read a server key owned by byokd): serve it from byokd.service", path, cluster)}
		}
		// The files as byokd loads them at start.
		if _, err := kmiptls.Load(kmiptls.Files{CAFile: cfg.KMIP.CAFile, CertFile: cfg.KMIP.CertFile,
			KeyFile: cfg.KMIP.KeyFile, Allowed: cfg.KMIP.AllowedClients}); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("%s: %v", path, err)}
		}
	}
	if underUnit && cfg.KeyProtect.APIKeyFile == filepath.Join(credDir, credentialName) {
		if err := checkCredentialSource(*source); err != nil {
			return &exitError{code: 1, msg: err.Error()}
		}
		fmt.Fprintf(w, "%s: ok (API key: the systemd credential %s, from %s)\n", path, credentialName, *source)
	} else {
		fmt.Fprintf(w, "%s: ok\n", path)
	}
	for _, l := range cfg.Loosened() {
		fmt.Fprintf(w, "warning: %s\n", l)
	}
	return nil
}

// checkCredentialSource checks the file systemd reads the API key from:
// there, a regular non-empty file, readable by its owner only. It does not
// read the key.
func checkCredentialSource(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("the API key: keyprotect.api_key_file is left out, so byokd.service hands byokd the credential %s from %s: %w", credentialName, path, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("the API key: %s is not a regular file (mode %s)", path, fi.Mode())
	case fi.Size() == 0:
		return fmt.Errorf("the API key: %s is empty", path)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("the API key: %s has mode %04o; make it readable by its owner only (chmod 0600)", path, fi.Mode().Perm())
	}
	return nil
}
