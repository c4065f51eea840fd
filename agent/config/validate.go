// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/byokd/byokd/client/keyprovider"
)

// validator checks decoded values and locates each problem with the lines
// recorded by the schema check.
type validator struct {
	file  string
	lines lines
	errs  []*Error
}

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.lines.of(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// required reports an empty value, saying whether the key is missing or
// present and empty.
func (v *validator) required(key, val string) bool {
	if val != "" {
		return true
	}
	if v.lines.has(key) {
		v.fail(key, "must not be empty")
	} else {
		v.fail(key, "required")
	}
	return false
}

var (
	uuidRE    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	aliasRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{2,90}$`)
	keyRingRE = regexp.MustCompile(`^[A-Za-z0-9-]{2,100}$`)
)

func (v *validator) config(c *Config) {
	v.clusterID(c.ClusterID)
	v.keyProtect(&c.KeyProtect)
	v.absPath("state.dir", c.State.Dir, true)
	v.poll(&c.Poll)
	v.sealer(&c.Sealer)
	v.socket(&c.Socket)
	v.ops(&c.Ops)
	v.kmip(&c.KMIP)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
	for i, a := range c.LockActions {
		v.lockAction(fmt.Sprintf("lock_action[%d]", i), &a)
	}
	for i, a := range c.UnlockActions {
		v.lockAction(fmt.Sprintf("unlock_action[%d]", i), &a)
	}
}

func (v *validator) clusterID(id string) {
	const key = "cluster_id"
	if !v.required(key, id) {
		return
	}
	if len(id) > 128 {
		v.fail(key, "longer than 128 characters")
		return
	}
	for _, r := range id {
		if r < 0x20 || r > 0x7e || r == '/' {
			v.fail(key, "must be printable ASCII without '/'")
			return
		}
	}
	if strings.TrimSpace(id) != id {
		v.fail(key, "must not start or end with a space")
	}
}

func (v *validator) keyProtect(k *KeyProtect) {
	v.url("keyprotect.url", k.URL, k.AllowInsecureHTTP)
	v.url("keyprotect.iam_url", k.IAMURL, k.AllowInsecureHTTP)
	if v.required("keyprotect.instance_id", k.InstanceID) && !uuidRE.MatchString(k.InstanceID) {
		v.fail("keyprotect.instance_id", "must be a UUID, got %q", k.InstanceID)
	}
	if v.required("keyprotect.root_key_id", k.RootKeyID) && !uuidRE.MatchString(k.RootKeyID) && !aliasRE.MatchString(k.RootKeyID) {
		v.fail("keyprotect.root_key_id", "must be a UUID or an alias of 2-90 characters from [A-Za-z0-9_-], got %q", k.RootKeyID)
	}
	if k.KeyRing != "" && !keyRingRE.MatchString(k.KeyRing) {
		v.fail("keyprotect.key_ring", "must be 2-100 characters from [A-Za-z0-9-], got %q", k.KeyRing)
	}
	// The API key file is never echoed: someone may have pasted the key
	// itself there.
	switch {
	case k.APIKeyFile == "" && v.lines.has("keyprotect.api_key_file"):
		v.fail("keyprotect.api_key_file", "must not be empty; leave it out to use the systemd credential %s", credentialName)
	case k.APIKeyFile == "":
		v.fail("keyprotect.api_key_file", "required when $%s is not set (systemd LoadCredential=%s:...)", credentialsEnv, credentialName)
	case !filepath.IsAbs(k.APIKeyFile):
		v.fail("keyprotect.api_key_file", "must be an absolute path")
	}
	v.absPath("keyprotect.ca_file", k.CAFile, false)
	v.between("keyprotect.timeout", k.Timeout, time.Second, 5*time.Minute)
}

// url checks an endpoint: https (or http when allowed), a host, nothing
// after the path.
func (v *validator) url(key, raw string, allowHTTP bool) {
	if !v.required(key, raw) {
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Hostname() == "" || u.Opaque != "":
		// Not echoed: an unparsable URL may hide credentials.
		v.fail(key, "must be an absolute URL such as \"https://us-south.kms.cloud.ibm.com\"")
	case u.User != nil:
		v.fail(key, "must not contain a user or password")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		v.fail(key, "must not have a query or fragment, got %q", raw)
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTP:
	case u.Scheme == "http":
		v.fail(key, "uses plain http; set keyprotect.allow_insecure_http = true to allow it (never in production)")
	default:
		v.fail(key, "must be an https URL, got scheme %q", u.Scheme)
	}
}

func (v *validator) poll(p *Poll) {
	v.between("poll.interval", p.Interval, time.Second, time.Hour)
	if math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter > 0.5 {
		v.fail("poll.jitter", "must be between 0 and 0.5, got %v", p.Jitter)
	}
	if p.ProofInterval < p.Interval {
		v.fail("poll.proof_interval", "%q is shorter than poll.interval %q", p.ProofInterval, p.Interval)
	}
	v.between("poll.offline_grace", p.OfflineGrace, 0, 7*24*time.Hour)
	v.between("poll.confirm_window", p.ConfirmWindow, 0, time.Hour)
}

func (v *validator) sealer(s *Sealer) {
	v.oneOf("sealer.backend", s.Backend, "auto", "memory", "tpm", "cpacf")
	v.absPath("sealer.tpm_device", s.TPMDevice, s.Backend == "tpm")
}

func (v *validator) socket(s *Socket) {
	v.absPath("socket.path", s.Path, true)
	if s.Mode&0o007 != 0 && !s.AllowWorldAccess {
		v.fail("socket.mode", "%q gives others access; set socket.allow_world_access = true to allow it", s.Mode)
	}
	if s.Group != "" && strings.ContainsAny(s.Group, " \t\n:/,") {
		v.fail("socket.group", "%q is not a group name", s.Group)
	}
	for i, id := range s.AllowedUIDs {
		v.id(fmt.Sprintf("socket.allowed_uids[%d]", i), id)
	}
	for i, id := range s.AllowedGIDs {
		v.id(fmt.Sprintf("socket.allowed_gids[%d]", i), id)
	}
	if len(s.AllowedUIDs) == 0 && len(s.AllowedGIDs) == 0 {
		key := "socket.allowed_uids"
		if !v.lines.has(key) && v.lines.has("socket.allowed_gids") {
			key = "socket.allowed_gids"
		}
		v.fail(key, "required: name at least one allowed caller in socket.allowed_uids or socket.allowed_gids")
	}
	if len(s.AllowedExes) > 0 {
		v.fail("socket.allowed_exes", "no longer supported: byokd cannot check a caller's executable (another user's /proc/PID/exe "+
			"needs a capability byokd.service drops, and a caller can exec another program once connected); "+
			"allow callers by uid and gid, and leave it out or empty")
	}
	if len(s.Modes) == 0 {
		v.fail("socket.modes", "must name at least one of %q and %q", keyprovider.Release, keyprovider.Strict)
	}
	for i, m := range s.Modes {
		key := fmt.Sprintf("socket.modes[%d]", i)
		if v.oneOf(key, m, string(keyprovider.Release), string(keyprovider.Strict)) && slices.Index(s.Modes, m) < i {
			v.fail(key, "%q is listed twice", m)
		}
	}
}

func (v *validator) id(key string, id int) {
	// 4294967295 is (uid_t)-1, which the kernel reserves for "no id".
	if id < 0 || int64(id) >= math.MaxUint32 {
		v.fail(key, "must be between 0 and %d, got %d", uint32(math.MaxUint32-1), id)
	}
}

func (v *validator) ops(o *Ops) {
	if o.Listen == "" {
		return
	}
	v.listen("ops.listen", o.Listen, "127.0.0.1:9464", "ops.allow_remote_ops", o.AllowRemoteOps)
}

// listen checks a TCP host:port that must be loopback unless allowKey is
// set.
func (v *validator) listen(key, addr, example, allowKey string, allowRemote bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.fail(key, "must be host:port such as %q, got %q", example, addr)
		return
	}
	// Port 0 picks a free port (tests); the address chosen is logged.
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.fail(key, "port must be a number from 0 to 65535, got %q", port)
		return
	}
	if !isLoopback(host) && !allowRemote {
		v.fail(key, "%q is not a loopback address; set %s = true to allow it", addr, allowKey)
	}
}

// clientNameRE is a client certificate Common Name byokd accepts on the
// allow-list (what byokctl kmip issues).
var clientNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (v *validator) kmip(k *KMIP) {
	if !k.Enabled {
		return
	}
	if v.required("kmip.listen", k.Listen) {
		v.listen("kmip.listen", k.Listen, "127.0.0.1:5696", "kmip.allow_remote", k.AllowRemote)
	}
	v.absPath("kmip.ca_file", k.CAFile, true)
	v.absPath("kmip.cert_file", k.CertFile, true)
	v.absPath("kmip.key_file", k.KeyFile, true)
	if len(k.AllowedClients) == 0 {
		v.fail("kmip.allowed_clients", "required when kmip.enabled = true: the Common Names of the client certificates that may connect")
	}
	for i, n := range k.AllowedClients {
		if !clientNameRE.MatchString(n) {
			v.fail(fmt.Sprintf("kmip.allowed_clients[%d]", i), "must be 1 to 64 letters, digits, '.', '_' or '-', got %q", n)
		}
	}
}

// isLoopback reports whether host surely means this machine only. A name
// other than localhost may resolve anywhere, and "" means every address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

func (v *validator) lockAction(key string, a *LockAction) {
	if len(a.Command) == 0 {
		if v.lines.has(key + ".command") {
			v.fail(key+".command", "must not be empty")
		} else {
			v.fail(key+".command", "required")
		}
	} else if !filepath.IsAbs(a.Command[0]) {
		v.fail(key+".command[0]", "must be an absolute path, got %q", a.Command[0])
	}
	v.between(key+".timeout", a.Timeout, time.Second, time.Hour)
}

// absPath checks an absolute path; "" is an error only when required.
func (v *validator) absPath(key, p string, required bool) {
	switch {
	case p == "" && required:
		v.required(key, p)
	case p != "" && !filepath.IsAbs(p):
		v.fail(key, "must be an absolute path, got %q", p)
	}
}

func (v *validator) oneOf(key, val string, allowed ...string) bool {
	if slices.Contains(allowed, val) {
		return true
	}
	v.fail(key, "must be one of %s, got %q", quoteAll(allowed), val)
	return false
}

func (v *validator) between(key string, d Duration, lo, hi time.Duration) {
	if time.Duration(d) < lo || time.Duration(d) > hi {
		v.fail(key, "must be between %s and %s, got %q", Duration(lo), Duration(hi), d)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
