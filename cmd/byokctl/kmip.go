// SPDX-License-Identifier: Apache-2.0

package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/byokd/byokd/internal/kmippki"
)

const (
	// kmipDir is the folder byokctl kmip writes in by default.
	kmipDir = "/etc/byokd/kmip"
	// kmipPort is the KMIP port (IANA), where byokd's KMIP server listens.
	kmipPort = "5696"
	// kmipServerOwner is the user server.key is given to by default, when
	// byokctl runs as root: the user byokd.service runs byokd as.
	kmipServerOwner = "byokd"
)

// kmipHosts are the server certificate's names unless --host says.
var kmipHosts = []string{"127.0.0.1", "localhost"}

// What kmip init and add-client ask of the system; tests replace them.
var (
	geteuid    = os.Geteuid
	lookupUser = user.Lookup
	lchown     = os.Lchown
)

const kmipUsage = "usage: byokctl kmip init [--dir D] [--host H]... --client NAME [--client NAME]... [--server-owner USER] [--client-owner USER]\n" +
	"       byokctl kmip add-client [--dir D] [--client-owner USER] NAME"

func kmip(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &exitError{code: 2, msg: kmipUsage}
	}
	switch args[0] {
	case "init":
		return kmipInit(args[1:], stdout, stderr)
	case "add-client":
		return kmipAddClient(args[1:], stdout, stderr)
	}
	return &exitError{code: 2, msg: "unknown kmip command " + args[0] + "\n" + kmipUsage}
}

// stringList is a flag given any number of times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// owner is a user files are given to, with its primary group.
type owner struct {
	name     string
	uid, gid int
}

// lookupOwner finds the user that flag names.
func lookupOwner(flag, name string) (*owner, error) {
	u, err := lookupUser(name)
	var unknown user.UnknownUserError
	switch {
	case errors.As(err, &unknown):
		return nil, &exitError{code: 1, msg: fmt.Sprintf("--%s %s: no such user; nothing was written", flag, name)}
	case err != nil:
		return nil, &exitError{code: 1, msg: fmt.Sprintf("--%s %s: %v; nothing was written", flag, name, err)}
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, &exitError{code: 1, msg: fmt.Sprintf("--%s %s: uid %q, gid %q: %v", flag, name, u.Uid, u.Gid, err)}
	}
	return &owner{name: name, uid: uid, gid: gid}, nil
}

// flagOwner is the owner a --*-owner flag names: none when it is empty.
func flagOwner(flag, name string) (*owner, error) {
	if name == "" {
		return nil, nil
	}
	return lookupOwner(flag, name)
}

// isSet says whether the flag name was on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// chownAll gives each of paths to o, if o is not nil. When one fails it
// removes all of remove, which the caller has just written.
func chownAll(o *owner, paths, remove []string) error {
	if o == nil {
		return nil
	}
	for _, p := range paths {
		if err := lchown(p, o.uid, o.gid); err != nil {
			errs := []error{fmt.Errorf("give %s to %s: %w", p, o.name, err)}
			for _, r := range remove {
				if err := os.Remove(r); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			if len(errs) == 1 {
				errs = append(errs, errors.New("the files written were removed"))
			}
			return errors.Join(errs...)
		}
	}
	return nil
}

func kmipInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kmip init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", kmipDir, "the folder to write the files in; made if missing")
	var hosts, clients stringList
	fs.Var(&hosts, "host", "a name (DNS name or IP address) of byokd's KMIP server for its certificate; repeat for more (default 127.0.0.1 and localhost)")
	fs.Var(&clients, "client", "a client identity (the Subject CN of its certificate, in allowed_clients); repeat for more")
	serverOwner := fs.String("server-owner", "", "the user to give server.key to (default "+kmipServerOwner+" when run as root and that user exists)")
	clientOwner := fs.String("client-owner", "", "the user to give the client keys to (such as mongodb)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return &exitError{code: 2, msg: kmipUsage}
	}
	if len(clients) == 0 {
		return &exitError{code: 2, msg: "kmip init needs a --client NAME for each client identity (such as --client mongod)\n" + kmipUsage}
	}
	if len(hosts) == 0 {
		hosts = kmipHosts
	}
	for _, h := range hosts {
		if err := kmippki.CheckHost(h); err != nil {
			return &exitError{code: 2, msg: "--host: " + err.Error()}
		}
	}
	for _, c := range clients {
		if err := kmippki.CheckClientName(c); err != nil {
			return &exitError{code: 2, msg: "--client: " + err.Error()}
		}
	}
	var srvOwner *owner
	root := geteuid() == 0
	if isSet(fs, "server-owner") {
		o, err := flagOwner("server-owner", *serverOwner)
		if err != nil {
			return err
		}
		srvOwner = o
	} else if root {
		// byokd's user, where the package made it.
		if o, err := lookupOwner("server-owner", kmipServerOwner); err == nil {
			srvOwner = o
		}
	}
	clOwner, err := flagOwner("client-owner", *clientOwner)
	if err != nil {
		return err
	}

	files, err := kmippki.Init(kmippki.Options{Dir: *dir, Hosts: hosts, Clients: clients})
	if err != nil {
		return err
	}
	written := []string{files.CAKey, files.CA, files.ServerKey, files.ServerCert}
	var clientKeys []string
	for _, c := range files.Clients {
		written = append(written, c.Key, c.Cert, c.Bundle)
		clientKeys = append(clientKeys, c.Key, c.Bundle)
	}
	if err := chownAll(srvOwner, []string{files.ServerKey}, written); err != nil {
		return err
	}
	if err := chownAll(clOwner, clientKeys, written); err != nil {
		return err
	}

	d := filepath.Dir(files.CA)
	fmt.Fprintf(stdout, "Wrote in %s:\n", d)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	listFile(tw, files.CA, "the CA certificate: byokd and its clients trust it")
	listFile(tw, files.CAKey, "the CA key, for byokctl kmip add-client: keep it here, or offline")
	listFile(tw, files.ServerCert, "byokd's certificate, for "+strings.Join(hosts, ", "))
	listFile(tw, files.ServerKey, "its key")
	for _, c := range files.Clients {
		listFile(tw, c.Cert, "the certificate of client "+c.Name)
		listFile(tw, c.Key, "its key")
		listFile(tw, c.Bundle, "its key and certificate in one file, for mongod")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	quoted := make([]string, len(clients))
	for i, c := range clients {
		quoted[i] = tomlString(c)
	}
	fmt.Fprintf(stdout, "\nAdd to byokd's config (/etc/byokd/config.toml):\n\n")
	fmt.Fprintf(stdout, "[kmip]\nenabled = true\nlisten = %s\nca_file = %s\ncert_file = %s\nkey_file = %s\nallowed_clients = [%s]\n",
		tomlString(listenAddress(hosts[0])), tomlString(files.CA), tomlString(files.ServerCert), tomlString(files.ServerKey), strings.Join(quoted, ", "))
	for _, c := range files.Clients {
		fmt.Fprintf(stdout, "\nIn the mongod.conf of client %s (Percona Server for MongoDB):\n\n", c.Name)
		mongodSnippet(stdout, hosts[0], files.CA, c.Bundle)
	}
	if srvOwner == nil && root {
		fmt.Fprintf(stdout, "\nNote: %s belongs to root, and byokd reads it as its own user: give it to that user (--server-owner at init, or chown).\n", files.ServerKey)
	}
	if clOwner == nil && root {
		fmt.Fprintf(stdout, "\nNote: the client keys and bundles belong to root, readable by root only: give each to the user its mongod runs as (--client-owner, or chown).\n")
	}
	return nil
}

func kmipAddClient(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kmip add-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", kmipDir, "the folder of kmip init, with ca.pem and ca.key")
	clientOwner := fs.String("client-owner", "", "the user to give the client's key to (such as mongodb)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return &exitError{code: 2, msg: kmipUsage + "\n(the flags come before NAME)"}
	}
	name := fs.Arg(0)
	if err := kmippki.CheckClientName(name); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	clOwner, err := flagOwner("client-owner", *clientOwner)
	if err != nil {
		return err
	}
	c, err := kmippki.AddClient(*dir, name, nil)
	if err != nil {
		return err
	}
	if err := chownAll(clOwner, []string{c.Key, c.Bundle}, []string{c.Key, c.Cert, c.Bundle}); err != nil {
		return err
	}
	d := filepath.Dir(c.Cert)
	fmt.Fprintf(stdout, "Wrote in %s:\n", d)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	listFile(tw, c.Cert, "the certificate of client "+c.Name)
	listFile(tw, c.Key, "its key")
	listFile(tw, c.Bundle, "its key and certificate in one file, for mongod")
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nAdd %s to allowed_clients in the [kmip] section of byokd's config.\n", tomlString(c.Name))
	fmt.Fprintf(stdout, "\nIn the mongod.conf of client %s (Percona Server for MongoDB):\n\n", c.Name)
	mongodSnippet(stdout, serverName(filepath.Join(d, kmippki.ServerCertFile)), filepath.Join(d, kmippki.CAFile), c.Bundle)
	if clOwner == nil && geteuid() == 0 {
		fmt.Fprintf(stdout, "\nNote: %s belongs to root, readable by root only: give it to the user mongod runs as (--client-owner, or chown).\n", c.Bundle)
	}
	return nil
}

// listFile writes a line with path's name, mode and owner, and what it is.
func listFile(w io.Writer, path, what string) {
	mode, who := "?", "?"
	if fi, err := os.Lstat(path); err == nil {
		mode = fmt.Sprintf("%04o", fi.Mode().Perm())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			who = strconv.FormatUint(uint64(st.Uid), 10)
			if u, err := user.LookupId(who); err == nil {
				who = u.Username
			}
		}
	}
	fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", filepath.Base(path), mode, who, what)
}

func mongodSnippet(w io.Writer, server, caFile, bundle string) {
	fmt.Fprintf(w, "security:\n  enableEncryption: true\n  kmip:\n    serverName: %s\n    port: %s\n    serverCAFile: %s\n    clientCertificateFile: %s\n    keyStatePollingSeconds: 30\n",
		yamlString(server), kmipPort, yamlString(caFile), yamlString(bundle))
}

// listenAddress is where byokd listens for clients that reach it at host.
func listenAddress(host string) string {
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return net.JoinHostPort(host, kmipPort)
}

// serverName is a name in the server certificate file (its first IP
// address, else its first DNS name), for mongod's serverName.
func serverName(file string) string {
	const unknown = "<a name in " + kmippki.ServerCertFile + ">"
	b, err := os.ReadFile(file)
	if err != nil {
		return unknown
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return unknown
	}
	c, err := x509.ParseCertificate(block.Bytes)
	switch {
	case err != nil:
		return unknown
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return unknown
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

var yamlPlain = regexp.MustCompile(`^[A-Za-z0-9/][A-Za-z0-9/._-]*$`)

// yamlString is s as a YAML scalar: plain when it is a simple name or
// path that YAML 1.1 does not read as a boolean or null, else
// single-quoted.
func yamlString(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "true", "false", "on", "off", "null":
	default:
		if yamlPlain.MatchString(s) {
			return s
		}
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
