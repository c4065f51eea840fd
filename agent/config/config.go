// SPDX-License-Identifier: Apache-2.0

// Package config loads byokd's TOML configuration strictly, fills in its defaults, and reads the Key Protect API key it points at.
package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/client/keyprovider"
)

// DefaultPath is where byokd reads its configuration unless told otherwise.
const DefaultPath = "/etc/byokd/config.toml"

// maxFileSize bounds what Load reads; a real configuration is a few KiB.
const maxFileSize = 1 << 20

// Config is byokd's configuration. Parse and Load return it with every
// default filled in and every value checked.
type Config struct {
	// ClusterID names the database cluster. It is bound to the wrapped data
	// key as additional authenticated data, so a wrapped key copied to
	// another cluster does not unwrap there.
	ClusterID string `toml:"cluster_id"`
	// KeyProtect says how to reach Key Protect and which root key to use.
	KeyProtect KeyProtect `toml:"keyprotect"`
	// State says where the wrapped data key is kept.
	State State `toml:"state"`
	// Poll says how often the root key is checked and how long byokd keeps
	// serving without an answer.
	Poll Poll `toml:"poll"`
	// Sealer picks the backend that holds the data key in memory.
	Sealer Sealer `toml:"sealer"`
	// Socket is the key provider's unix socket and who may call it.
	Socket Socket `toml:"socket"`
	// Ops is the HTTP listener for probes and metrics.
	Ops Ops `toml:"ops"`
	// KMIP is the [kmip] table: the KMIP server for databases that take
	// their master key over KMIP.
	KMIP KMIP `toml:"kmip"`
	// Log sets the log level and format.
	Log Log `toml:"log"`
	// LockActions are the commands run, in order, when byokd locks.
	LockActions []LockAction `toml:"lock_action,omitempty"`
	// UnlockActions are the commands run, in order, when byokd serves keys
	// again after a lock (not at its first unlock after a start).
	UnlockActions []LockAction `toml:"unlock_action,omitempty"`
}

// KeyProtect is the [keyprotect] table.
type KeyProtect struct {
	// URL is the Key Protect endpoint of the instance's region.
	URL string `toml:"url"`
	// IAMURL is the IAM endpoint; see TokenURL.
	IAMURL string `toml:"iam_url"`
	// InstanceID is the Key Protect instance, a UUID.
	InstanceID string `toml:"instance_id"`
	// RootKeyID is the customer's root key, by UUID or alias.
	RootKeyID string `toml:"root_key_id"`
	// KeyRing is the key ring of the root key; "" for the default ring.
	KeyRing string `toml:"key_ring"`
	// APIKeyFile holds the IAM API key. After Parse it is never empty: when
	// the file leaves it out it is $CREDENTIALS_DIRECTORY/kp-apikey.
	APIKeyFile string `toml:"api_key_file,omitempty"`
	// CAFile is a PEM bundle of roots to trust instead of the system's;
	// "" uses the system roots.
	CAFile string `toml:"ca_file"`
	// Timeout bounds each request to Key Protect or IAM.
	Timeout Duration `toml:"timeout"`
	// AllowInsecureHTTP permits http:// URLs, for the local emulator only.
	AllowInsecureHTTP bool `toml:"allow_insecure_http"`
}

// TokenURL is the IAM token endpoint: IAMURL + "/identity/token".
func (k KeyProtect) TokenURL() string {
	return strings.TrimRight(k.IAMURL, "/") + "/identity/token"
}

// State is the [state] table.
type State struct {
	// Dir holds the wrapped data key; see DEKPath.
	Dir string `toml:"dir"`
	// Provision lets byokd create the data key on first start when none is
	// stored yet.
	Provision bool `toml:"provision"`
}

// DEKPath is the file of the wrapped data key: Dir/dek.json, by the name
// wdek gives it.
func (s State) DEKPath() string {
	return filepath.Join(s.Dir, wdek.FileName)
}

// Poll is the [poll] table.
type Poll struct {
	// Interval is how often the root key's state is read.
	Interval Duration `toml:"interval"`
	// Jitter spreads polls by up to this fraction of Interval either way.
	Jitter float64 `toml:"jitter"`
	// ProofInterval is how often an unwrap proves the key still works.
	ProofInterval Duration `toml:"proof_interval"`
	// OfflineGrace is how long byokd keeps serving while Key Protect cannot
	// be reached; 0 locks at the first failed poll.
	OfflineGrace Duration `toml:"offline_grace"`
	// ConfirmWindow is how long an access refusal (401, 403, or IAM
	// refusing the API key) or a Key Protect internal error (422) must
	// persist before byokd locks: a network policy or a wrong region
	// refuses every node at once. Never longer than OfflineGrace.
	ConfirmWindow Duration `toml:"confirm_window"`
	// LockOnExpired locks when the root key expires, although Key Protect
	// still unwraps with an expired key.
	LockOnExpired bool `toml:"lock_on_expired"`
}

// Sealer is the [sealer] table.
type Sealer struct {
	// Backend is "auto", "memory", "tpm" or "cpacf".
	Backend string `toml:"backend"`
	// TPMDevice is the TPM resource manager device.
	TPMDevice string `toml:"tpm_device"`
}

// Socket is the [socket] table.
type Socket struct {
	// Path is the unix socket of the key provider.
	Path string `toml:"path"`
	// Mode is the socket file's permission bits.
	Mode FileMode `toml:"mode"`
	// Group owns the socket file; "" keeps the process's primary group.
	Group string `toml:"group"`
	// AllowedUIDs are the peer uids allowed to call.
	AllowedUIDs []int `toml:"allowed_uids,omitempty"`
	// AllowedGIDs are the peer gids allowed to call.
	AllowedGIDs []int `toml:"allowed_gids,omitempty"`
	// AllowedExes is accepted only empty, as configs of earlier releases
	// (and their example) have it: byokd does not check executables.
	AllowedExes []string `toml:"allowed_exes,omitempty"`
	// Modes are the key-provider modes served: "release", "strict" or both.
	Modes []string `toml:"modes"`
	// AllowWorldAccess permits a Mode that gives others access.
	AllowWorldAccess bool `toml:"allow_world_access"`
}

// Ops is the [ops] table.
type Ops struct {
	// Listen is the host:port of the probes and metrics; "" turns them off.
	Listen string `toml:"listen"`
	// AllowRemoteOps permits a Listen address other than loopback.
	AllowRemoteOps bool `toml:"allow_remote_ops"`
}

// KMIP is the [kmip] table.
type KMIP struct {
	// Enabled turns the KMIP server on.
	Enabled bool `toml:"enabled"`
	// Listen is the host:port it serves on.
	Listen string `toml:"listen"`
	// CAFile holds the CA certificates that sign the allowed clients'
	// certificates (PEM).
	CAFile string `toml:"ca_file"`
	// CertFile is the server's certificate chain (PEM).
	CertFile string `toml:"cert_file"`
	// KeyFile is the server's private key (PEM); others may not read it.
	KeyFile string `toml:"key_file"`
	// AllowedClients are the Subject Common Names of the client
	// certificates that may connect.
	AllowedClients []string `toml:"allowed_clients,omitempty"`
	// AllowRemote permits a Listen address other than loopback.
	AllowRemote bool `toml:"allow_remote"`
}

// Log is the [log] table.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
	// Format is "json" or "text".
	Format string `toml:"format"`
}

// LockAction is one [[lock_action]] or [[unlock_action]] table.
type LockAction struct {
	// Command is the program, an absolute path, and its arguments; no shell.
	Command []string `toml:"command"`
	// Timeout bounds the command's run.
	Timeout Duration `toml:"timeout"`
}

// defaultLockActionTimeout applies to each [[lock_action]] and
// [[unlock_action]] that sets none.
const defaultLockActionTimeout = Duration(30 * time.Second)

// defaults returns the configuration of an empty file, before the checks
// for required keys.
func defaults() *Config {
	return &Config{
		KeyProtect: KeyProtect{
			IAMURL:  "https://iam.cloud.ibm.com",
			Timeout: Duration(10 * time.Second),
		},
		State: State{Dir: "/var/lib/byokd"},
		Poll: Poll{
			Interval:      Duration(15 * time.Second),
			Jitter:        0.1,
			ProofInterval: Duration(10 * time.Minute),
			OfflineGrace:  Duration(time.Hour),
			ConfirmWindow: Duration(time.Minute),
		},
		Sealer: Sealer{Backend: "auto", TPMDevice: "/dev/tpmrm0"},
		Socket: Socket{
			Path:  keyprovider.DefaultSocket,
			Mode:  0o660,
			Group: "byokd-clients",
			Modes: []string{string(keyprovider.Release)},
		},
		Ops: Ops{Listen: "127.0.0.1:9464"},
		KMIP: KMIP{
			Listen:   "127.0.0.1:5696",
			CAFile:   "/etc/byokd/kmip/ca.pem",
			CertFile: "/etc/byokd/kmip/server.pem",
			KeyFile:  "/etc/byokd/kmip/server.key",
		},
		Log: Log{Level: "info", Format: "json"},
	}
}

// Default returns the configuration of an empty file: every default,
// without the required keys (cluster_id, [keyprotect]'s url, instance_id
// and root_key_id, the allow-list), for code that builds a node without a
// file, such as the fleet simulation.
func Default() *Config { return defaults() }

// DefaultPoll is the [poll] table of an empty configuration.
func DefaultPoll() Poll { return defaults().Poll }

// Load reads and parses the configuration file at path. It refuses a file
// that is not a regular file (a symbolic link to one is fine) or that group
// or others can write, since whoever can write it decides which key server
// byokd trusts.
func Load(path string) (*Config, error) {
	// Stat before opening, so that a FIFO is refused rather than blocked on.
	before, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if err := checkFile(path, before); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if !os.SameFile(before, fi) {
		return nil, &Error{File: path, Msg: "file was replaced while being opened"}
	}
	if err := checkFile(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d bytes", maxFileSize)}
	}
	return Parse(path, data)
}

func checkFile(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &Error{File: path, Msg: fmt.Sprintf("not a regular file (mode %s)", fi.Mode())}
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return &Error{File: path, Msg: fmt.Sprintf("mode %04o lets group or others write it (chmod go-w %s)", uint32(perm), path)}
	}
	// Its owner can rewrite it whatever its mode.
	if uid, ok := owner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return &Error{File: path, Msg: fmt.Sprintf("owned by uid %d, who can rewrite it; it must be owned by root or by uid %d that byokd runs as (chown root %s)", uid, os.Geteuid(), path)}
	}
	return nil
}

// Parse parses a configuration. name is used in error messages, usually the
// file's path. Every problem found is reported, each as an *Error, joined
// with errors.Join: first all unknown keys and wrong types, or, when there
// are none, all values that are missing, out of range or unsafe.
//
// When keyprotect.api_key_file is left out, Parse sets it to the systemd
// credential $CREDENTIALS_DIRECTORY/kp-apikey, or reports it missing when
// that variable is not set.
func Parse(name string, data []byte) (*Config, error) {
	c, err := check(name, data, reflect.TypeFor[Config]())
	if err != nil {
		// A syntax error: go-toml's decoder reports it with its line.
		if derr := decode(data, &Config{}); derr != nil {
			return nil, joinErrors(fromDecoder(name, derr, nil))
		}
		return nil, &Error{File: name, Msg: err.Error(), Err: err}
	}
	if len(c.errs) > 0 {
		return nil, joinErrors(c.errs)
	}
	cfg := defaults()
	// The schema check has passed, so this fails only on what it does not
	// look for, such as a key defined twice.
	if err := decode(data, cfg); err != nil {
		return nil, joinErrors(fromDecoder(name, err, c.qualify))
	}
	for i := range cfg.LockActions {
		if !c.lines.has(fmt.Sprintf("lock_action[%d].timeout", i)) {
			cfg.LockActions[i].Timeout = defaultLockActionTimeout
		}
	}
	for i := range cfg.UnlockActions {
		if !c.lines.has(fmt.Sprintf("unlock_action[%d].timeout", i)) {
			cfg.UnlockActions[i].Timeout = defaultLockActionTimeout
		}
	}
	if cfg.KeyProtect.APIKeyFile == "" {
		if dir := os.Getenv(credentialsEnv); dir != "" {
			cfg.KeyProtect.APIKeyFile = filepath.Join(dir, credentialName)
		}
	}
	v := validator{file: name, lines: c.lines}
	v.config(cfg)
	if len(v.errs) > 0 {
		return nil, joinErrors(v.errs)
	}
	return cfg, nil
}

func decode(data []byte, v any) error {
	return toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(v)
}

// Loosened lists, one sentence each, the settings in force that are less
// safe than the defaults, so that byokd can log them at start. A default
// that is itself a trade-off, such as lock_on_expired = false, is not listed.
func (c *Config) Loosened() []string {
	var out []string
	if c.KeyProtect.AllowInsecureHTTP {
		out = append(out, "keyprotect.allow_insecure_http = true: Key Protect and IAM may be reached over plain http, exposing the API key and the data key to the network")
	}
	if c.Socket.AllowWorldAccess {
		out = append(out, fmt.Sprintf("socket.allow_world_access = true: socket mode %s lets every local user reach the socket (the uid/gid allow-list still applies)", c.Socket.Mode))
	}
	if c.Ops.AllowRemoteOps {
		out = append(out, fmt.Sprintf("ops.allow_remote_ops = true: the ops listener %q may be reachable from other hosts", c.Ops.Listen))
	}
	if c.KMIP.Enabled && c.KMIP.AllowRemote {
		out = append(out, fmt.Sprintf("kmip.allow_remote = true: the KMIP server %q may be reachable from other hosts (client certificates are still required)", c.KMIP.Listen))
	}
	def := defaults()
	if c.Poll.Interval > def.Poll.Interval {
		out = append(out, fmt.Sprintf("poll.interval = %q: a revoked root key may be noticed that late (default %q)", c.Poll.Interval, def.Poll.Interval))
	}
	if c.Poll.OfflineGrace > def.Poll.OfflineGrace {
		out = append(out, fmt.Sprintf("poll.offline_grace = %q: keys stay unlocked that long without reaching Key Protect (default %q)", c.Poll.OfflineGrace, def.Poll.OfflineGrace))
	}
	if c.Poll.ConfirmWindow > def.Poll.ConfirmWindow {
		out = append(out, fmt.Sprintf("poll.confirm_window = %q: keys stay unlocked that long after Key Protect refuses access (default %q)", c.Poll.ConfirmWindow, def.Poll.ConfirmWindow))
	}
	return out
}
