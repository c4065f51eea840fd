// SPDX-License-Identifier: Apache-2.0

package main

// The dev setup: an in-process Key Protect emulator with a root key, and a
// config that keeps everything in one dev folder.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	kp "github.com/IBM/keyprotect-go-client"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/internal/atomicfile"
	"github.com/byokd/byokd/internal/kmippki"
	"github.com/byokd/byokd/kpemu"
)

// InstanceID is the emulated Key Protect instance of dev mode.
const InstanceID = "00000000-0000-4000-8000-000000000de0"

// Env is what .dev/kpemu.env holds, for scripts that drive the emulator.
type Env struct {
	URL, APIKey, InstanceID, RootKeyID string
}

// Dev is a running dev setup.
type Dev struct {
	Config *config.Config
	KP     *kpemu.Instance
	Env    Env
	Dir    string
	// KMIP are the dev CA, server and client files in Dir/kmip.
	KMIP kmippki.Files
}

// DevKMIPClient is the client certificate the dev node's KMIP server allows.
const DevKMIPClient = "dev-client"

// devKMIP makes the dev node's KMIP CA, server certificate (for 127.0.0.1
// and localhost) and client certificate in dir/kmip the first time, and
// reuses them after; a stale kmip.env from an earlier run (another port)
// goes first.
func devKMIP(dir string) (kmippki.Files, error) {
	if err := os.Remove(filepath.Join(dir, "kmip.env")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return kmippki.Files{}, err
	}
	kdir := filepath.Join(dir, "kmip")
	f := kmippki.Layout(kdir, DevKMIPClient)
	c := f.Clients[0]
	var missing []string
	for _, p := range []string{f.CA, f.CAKey, f.ServerCert, f.ServerKey, c.Cert, c.Key, c.Bundle} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	switch len(missing) {
	case 0:
		return f, nil
	case 7:
		made, err := kmippki.Init(kmippki.Options{Dir: kdir, Hosts: []string{"127.0.0.1", "localhost"}, Clients: []string{DevKMIPClient}})
		if err != nil {
			return kmippki.Files{}, fmt.Errorf("dev KMIP certificates: %w", err)
		}
		return made, nil
	}
	return kmippki.Files{}, fmt.Errorf("dev KMIP certificates: %s is missing; delete %s to make them afresh", strings.Join(missing, ", "), kdir)
}

// KMIPEnv is what .dev/kmip.env holds, for a KMIP client in another
// terminal.
func KMIPEnv(addr string, f kmippki.Files) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	c := f.Clients[0]
	return fmt.Sprintf("# The dev node's KMIP server; source it: . .dev/kmip.env\n"+
		"export KMIP_HOST='%s'\nexport KMIP_PORT='%s'\nexport KMIP_CA='%s'\nexport KMIP_CLIENT_CERT='%s'\nexport KMIP_CLIENT_KEY='%s'\n"+
		"# key and certificate in one file, as mongod's security.kmip.clientCertificateFile takes them\nexport KMIP_CLIENT_BUNDLE='%s'\n",
		host, port, f.CA, c.Cert, c.Key, c.Bundle), nil
}

// WriteKMIPEnv waits until the KMIP server at addr completes a TLS
// handshake with the dev client's certificate, then writes dir/kmip.env:
// a client that finds the file finds the server answering.
func WriteKMIPEnv(ctx context.Context, dir, addr string, f kmippki.Files) error {
	env, err := KMIPEnv(addr, f)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(f.Clients[0].Cert, f.Clients[0].Key)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: host, MinVersion: tls.VersionTLS12}}
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the KMIP server at %s did not answer: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return atomicfile.Write(filepath.Join(dir, "kmip.env"), []byte(env), 0o600)
}

// Close stops the emulator.
func (d *Dev) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.KP.Close(ctx)
}

// Setup creates (or reuses) dir and starts the emulator. Nothing is written
// outside dir. The emulator's waiting periods (30 s between disable and
// enable, 1 h between rotations) are off, so a newcomer can lock and unlock
// the node at will.
func Setup(dir string, log *slog.Logger) (*Dev, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("dev folder: %w", err)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("dev folder: %w", err)
	}
	state := filepath.Join(abs, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, fmt.Errorf("dev state folder: %w", err)
	}
	apiKeyPath := filepath.Join(abs, "apikey")
	apiKey, err := readOrCreateAPIKey(apiKeyPath)
	if err != nil {
		return nil, err
	}
	in, err := kpemu.Listen(kpemu.Config{
		InstanceID:     InstanceID,
		APIKeys:        []string{apiKey},
		StatePath:      filepath.Join(abs, "kpemu-state.json"),
		ActionCooldown: -1,
		RotateCooldown: -1,
		Logger:         log.With("component", "kpemu"),
	}, "127.0.0.1:0", "", "")
	if err != nil {
		return nil, err
	}
	d := &Dev{KP: in, Dir: abs}
	envPath := filepath.Join(abs, "kpemu.env")
	rootKey, err := rootKey(in, apiKey, envPath)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.Env = Env{URL: in.URL, APIKey: apiKey, InstanceID: InstanceID, RootKeyID: rootKey}
	if err := writeEnv(envPath, d.Env); err != nil {
		d.Close()
		return nil, err
	}
	cfgPath := filepath.Join(abs, "byokd.toml")
	c := config.Default()
	c.ClusterID = "dev"
	c.KeyProtect = config.KeyProtect{URL: in.URL, IAMURL: in.URL, InstanceID: InstanceID, RootKeyID: rootKey,
		APIKeyFile: apiKeyPath, AllowInsecureHTTP: true, Timeout: config.Duration(5 * time.Second)}
	c.State = config.State{Dir: state, Provision: true}
	c.Poll.Interval, c.Poll.ProofInterval, c.Poll.OfflineGrace = config.Duration(2*time.Second), config.Duration(time.Minute), config.Duration(time.Minute)
	c.Sealer.Backend = "memory"
	c.Socket.Path, c.Socket.Mode, c.Socket.Group = filepath.Join(abs, "keyprovider.sock"), 0o600, ""
	c.Socket.AllowedUIDs = []int{os.Getuid()}
	c.Socket.Modes = []string{string(keyprovider.Release), string(keyprovider.Strict)}
	// A free loopback port, printed at start, so that two checkouts can run.
	c.Ops.Listen = "127.0.0.1:0"
	kfiles, err := devKMIP(abs)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.KMIP = kfiles
	c.KMIP = config.KMIP{Enabled: true, Listen: "127.0.0.1:0", CAFile: kfiles.CA, CertFile: kfiles.ServerCert,
		KeyFile: kfiles.ServerKey, AllowedClients: []string{DevKMIPClient}}
	c.Log.Format = "text"
	toml, err := config.Marshal(c)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("dev config: %w", err)
	}
	toml = append([]byte("# Written by byokd-dev; rewritten at every start.\n"), toml...)
	if err := atomicfile.Write(cfgPath, toml, 0o600); err != nil {
		d.Close()
		return nil, fmt.Errorf("dev config: %w", err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.Config = cfg
	return d, nil
}

func readOrCreateAPIKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dev API key: %w", err)
	}
	var r [16]byte
	_, _ = rand.Read(r[:])
	key := "dev-" + hex.EncodeToString(r[:])
	if err := atomicfile.Write(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dev API key: %w", err)
	}
	return key, nil
}

// rootKey reuses the root key named in the env file when the emulator still
// has it (in any state: a newcomer may have left it disabled), else creates
// one.
func rootKey(in *kpemu.Instance, apiKey, envPath string) (string, error) {
	c, err := kp.New(kp.ClientConfig{
		BaseURL: in.URL, TokenURL: in.URL + "/identity/token", APIKey: apiKey, InstanceID: InstanceID, Timeout: 10,
	}, kp.DefaultTransport())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if old := readEnv(envPath)["KP_ROOT_KEY_ID"]; old != "" {
		if k, err := c.GetKeyMetadata(ctx, old); err == nil && k.ID == old {
			return old, nil
		}
	}
	k, err := c.CreateRootKey(ctx, "byokd-dev-root", nil)
	if err != nil {
		return "", fmt.Errorf("create the dev root key: %w", err)
	}
	return k.ID, nil
}

func readEnv(path string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = strings.Trim(v, `'"`)
		}
	}
	return out
}

func writeEnv(path string, e Env) error {
	s := fmt.Sprintf("# The emulator byokd-dev runs; source it: . %s\nexport KP_URL='%s'\nexport KP_API_KEY='%s'\nexport KP_INSTANCE_ID='%s'\nexport KP_ROOT_KEY_ID='%s'\n",
		path, e.URL, e.APIKey, e.InstanceID, e.RootKeyID)
	return atomicfile.Write(path, []byte(s), 0o600)
}
