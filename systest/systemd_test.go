// SPDX-License-Identifier: Apache-2.0

// Package systest installs byokd's packages in a container that boots a
// real systemd (systemd-nspawn, Debian 12) and runs it there as shipped:
// the units' hardening, socket activation, credentials, the watchdog, lock
// actions, upgrades and removal.
package systest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/byokd/byokd/agent/config"
	"github.com/byokd/byokd/internal/testenv"
)

const (
	// The versions the tests install; the second upgrades the first.
	v1 = "1.0.0"
	v2 = "1.0.1"

	kpAddr     = "127.0.0.1:8787"
	kpInstance = "00000000-0000-4000-8000-0000000005e5"
	kpAPIKey   = "systest-api-key"
)

var (
	distOnce sync.Once
	distDir  string // removed by TestMain
	dists    map[string]string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if distDir != "" {
		os.RemoveAll(distDir)
	}
	os.Exit(code)
}

// packages builds the .debs of v1 and v2 once per test process.
func packages(t *testing.T) map[string]string {
	t.Helper()
	distOnce.Do(func() {
		var err error
		if distDir, err = os.MkdirTemp("", "byokd-systest-dist-"); err != nil {
			t.Fatal(err)
		}
		dists = map[string]string{}
		for _, v := range []string{v1, v2} {
			d := filepath.Join(distDir, v)
			testenv.Packages(t, v, d)
			dists[v] = d
		}
	})
	if dists[v2] == "" {
		t.Fatal("the packages were not built")
	}
	return dists
}

// node is a container with the packages of both versions at /ci/VERSION/,
// the test binaries (kpemu) at /ci/bin/ and e2e/testdata (the PyKMIP
// driver) at /ci/testdata/.
type node struct {
	*testenv.Container
	root string // the Key Protect root key, once configured
}

func boot(t *testing.T) *node {
	t.Helper()
	d := packages(t)
	testdata, err := filepath.Abs(filepath.Join("..", "e2e", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	binds := map[string]string{testenv.Binaries(t): "/ci/bin", testdata: "/ci/testdata"}
	for v, dir := range d {
		binds[dir] = "/ci/" + v
	}
	return &node{Container: testenv.BootContainer(t, binds)}
}

func (n *node) deb(name, version string) string {
	return fmt.Sprintf("/ci/%s/%s_%s_%s.deb", version, name, version, goarch())
}

// goarch is the architecture the packages are built for: this machine's.
func goarch() string { return runtime.GOARCH }

// install installs byokd (and the plugin) of version with dpkg.
func (n *node) install(t *testing.T, version string) string {
	t.Helper()
	return n.MustRun(t, "dpkg", "-i", n.deb("byokd", version), n.deb("byokd-wiredtiger", version))
}

// startKP runs kpemu in the container as a unit, with a root key, and
// returns the root key's id.
func (n *node) startKP(t *testing.T) string {
	t.Helper()
	n.WriteFile(t, "/etc/systemd/system/kpemu.service", []byte(`[Unit]
Description=Key Protect emulator for the tests
[Service]
ExecStart=/ci/bin/kpemu --addr `+kpAddr+` --api-key `+kpAPIKey+` --instance-id `+kpInstance+` --action-cooldown 0 --rotate-cooldown 0 --quiet --state /var/lib/kpemu.json
`), 0o644)
	n.MustRun(t, "systemctl", "daemon-reload")
	n.MustRun(t, "systemctl", "start", "kpemu.service")
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		out, err = n.kpctl("create-root", "systest-root")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kpemu ctl create-root: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.root = strings.TrimSpace(out)
	return n.root
}

// kpctl plays the customer with kpemu ctl inside the container.
func (n *node) kpctl(args ...string) (string, error) {
	env := []string{"env", "KP_URL=http://" + kpAddr, "KP_API_KEY=" + kpAPIKey, "KP_INSTANCE_ID=" + kpInstance}
	if n.root != "" {
		env = append(env, "KP_ROOT_KEY_ID="+n.root)
	}
	return n.Run(append(append(env, "/ci/bin/kpemu", "ctl"), args...)...)
}

// configure writes /etc/byokd/config.toml for a node of the emulator's
// instance (poll every second, provisioning on, the callers root and the
// byokd-clients group) and the API key to /etc/byokd/apikey, as the
// postinst's steps say: handed to byokd as a systemd credential.
func (n *node) configure(t *testing.T, edit func(*config.Config)) {
	t.Helper()
	c := config.Default()
	c.ClusterID = "systest"
	c.KeyProtect.URL, c.KeyProtect.IAMURL = "http://"+kpAddr, "http://"+kpAddr
	c.KeyProtect.InstanceID, c.KeyProtect.RootKeyID = kpInstance, n.root
	c.KeyProtect.AllowInsecureHTTP = true
	c.State.Provision = true
	c.Poll.Interval = config.Duration(time.Second)
	c.Socket.AllowedUIDs = []int{0}
	if edit != nil {
		edit(c)
	}
	b, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	n.WriteFile(t, "/etc/byokd/config.toml", b, 0o644)
	n.WriteFile(t, "/etc/byokd/apikey", []byte(kpAPIKey+"\n"), 0o600)
}

// waitState waits until byokctl status says state.
func (n *node) waitState(t *testing.T, state string, d time.Duration) {
	t.Helper()
	n.waitClusterState(t, "", state, d)
}

// waitClusterState waits until byokctl status of byokd@cluster ("": byokd)
// says state.
func (n *node) waitClusterState(t *testing.T, cluster, state string, d time.Duration) {
	t.Helper()
	args, unit := []string{"byokctl", "status", "--json"}, "byokd"
	if cluster != "" {
		args, unit = []string{"byokctl", "--cluster", cluster, "status", "--json"}, "byokd@"+cluster
	}
	deadline := time.Now().Add(d)
	for {
		out, _ := n.Run(args...)
		if strings.Contains(out, `"state":"`+state+`"`) {
			return
		}
		if time.Now().After(deadline) {
			journal, _ := n.Run("journalctl", "-u", unit, "--no-pager", "-n", "50")
			t.Fatalf("byokd not %s after %v: %s\n%s", state, d, out, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestInstallConfigureStart installs the packages as an operator would,
// follows the steps the postinst prints, and starts byokd through its
// socket (socket activation) under the units as shipped.
func TestInstallConfigureStart(t *testing.T) {
	t.Parallel()
	n := boot(t)
	out := n.install(t, v1)
	for _, want := range []string{"not started: it is not configured yet", "byokctl check-config /etc/byokd/config.toml"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dpkg -i does not say %q:\n%s", want, out)
		}
	}
	n.Sh(t, `getent passwd byokd >/dev/null && getent group byokd-clients >/dev/null
[ "$(stat -c '%U:%G %a' /var/lib/byokd)" = "byokd:byokd 700" ]
[ "$(systemctl is-enabled byokd.service byokd.socket | sort -u)" = enabled ]
! systemctl is-active --quiet byokd.service`)

	n.startKP(t)
	n.configure(t, nil)
	// The postinst's step 3, run from an operator's shell: no
	// $CREDENTIALS_DIRECTORY there.
	if out, err := n.Run("sh", "-c", "byokctl check-config /etc/byokd/config.toml && systemctl start byokd.socket"); err != nil {
		t.Fatalf("the postinst's check-config step fails on the documented configuration: %v\n%s", err, out)
	}
	// The first client starts byokd through the socket.
	if out, err := n.Run("byokctl", "wait", "--unlocked", "--timeout", "30s"); err != nil {
		journal, _ := n.Run("journalctl", "-u", "byokd", "--no-pager", "-n", "50")
		t.Fatalf("byokctl wait --unlocked: %v\n%s\n%s", err, out, journal)
	}
	if st := n.MustRun(t, "systemctl", "show", "-P", "StatusText", "byokd.service"); !strings.HasPrefix(st, "UNLOCKED") {
		t.Fatalf("systemctl status line: %q", st)
	}
	n.Sh(t, `[ -s /var/lib/byokd/dek.json ] && [ "$(stat -c '%U %a' /var/lib/byokd/dek.json)" = "byokd 600" ]`)

	if out, err := n.kpctl("disable"); err != nil {
		t.Fatalf("disable: %v\n%s", err, out)
	}
	n.waitState(t, "LOCKED", 3*time.Second)
	// A database unit with the shipped drop-in waits while byokd is
	// locked (ExecStartPre=byokctl wait --unlocked) and starts once it
	// serves keys.
	n.installMongod(t, "--no-block")
	time.Sleep(2 * time.Second)
	if st, _ := n.Run("systemctl", "is-active", "mongod.service"); strings.TrimSpace(st) != "activating" {
		t.Fatalf("mongod is %q while byokd is locked, want activating (waiting for keys)", st)
	}
	if out, err := n.kpctl("enable"); err != nil {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	n.waitState(t, "UNLOCKED", 3*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := n.Run("systemctl", "is-active", "mongod.service")
		if strings.TrimSpace(st) == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mongod is %q 10 s after byokd unlocked", st)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Started through byokd.service rather than a client of the socket.
	n.MustRun(t, "systemctl", "stop", "mongod.service", "byokd.service", "byokd.socket")
	n.MustRun(t, "systemctl", "start", "byokd.service")
	n.waitState(t, "UNLOCKED", 10*time.Second)

	// A config its owner could rewrite is refused, by check-config and by
	// byokd (it was accepted).
	n.MustRun(t, "useradd", "--system", "--no-create-home", "alice")
	n.MustRun(t, "chown", "alice", "/etc/byokd/config.toml")
	if out, err := n.Run("byokctl", "check-config", "/etc/byokd/config.toml"); err == nil || !strings.Contains(out, "owned by uid") {
		t.Fatalf("check-config of a user-owned config: %v\n%s", err, out)
	}
	n.MustRun(t, "systemctl", "stop", "byokd.service")
	if _, err := n.Run("systemctl", "start", "byokd.service"); err == nil {
		t.Fatal("byokd started on a config owned by another user")
	}
	if j := n.MustRun(t, "journalctl", "-u", "byokd", "--no-pager", "-o", "cat", "-n", "20"); !strings.Contains(j, "/etc/byokd/config.toml: owned by uid") {
		t.Fatalf("byokd's refusal does not name the file and its owner:\n%s", j)
	}
}

// start configures the node and starts byokd through its socket, waiting
// until it serves keys.
func (n *node) start(t *testing.T) {
	t.Helper()
	n.MustRun(t, "systemctl", "start", "byokd.socket")
	if out, err := n.Run("byokctl", "wait", "--unlocked", "--timeout", "30s"); err != nil {
		journal, _ := n.Run("journalctl", "-u", "byokd", "--no-pager", "-n", "50")
		t.Fatalf("byokctl wait --unlocked: %v\n%s\n%s", err, out, journal)
	}
}

// TestRemoveReinstallPurge: removing the packages stops byokd and keeps its
// wrapped key; installing them again brings byokd back (Debian's remove
// masked the units, and nothing unmasked them: byokd, and mongod through
// its drop-in, could not start); purge keeps the wrapped key and says where.
func TestRemoveReinstallPurge(t *testing.T) {
	t.Parallel()
	n := serving(t)
	fp := n.MustRun(t, "byokctl", "status", "--json")

	n.MustRun(t, "dpkg", "-r", "byokd-wiredtiger", "byokd")
	n.Sh(t, `! systemctl is-active --quiet byokd.service && [ -s /var/lib/byokd/dek.json ]`)
	n.install(t, v1)
	if out, _ := n.Run("systemctl", "is-enabled", "byokd.service", "byokd.socket"); strings.TrimSpace(out) != "enabled\nenabled" {
		t.Fatalf("after remove and reinstall the units are %q, want enabled", out)
	}
	n.start(t)
	if after := n.MustRun(t, "byokctl", "status", "--json"); fingerprint(t, after) != fingerprint(t, fp) {
		t.Fatalf("the reinstalled byokd serves another key: %s, then %s", fingerprint(t, fp), fingerprint(t, after))
	}

	out := n.MustRun(t, "dpkg", "-P", "byokd-wiredtiger", "byokd")
	if !strings.Contains(out, "/var/lib/byokd/dek.json") {
		t.Fatalf("purge does not say where the wrapped key is:\n%s", out)
	}
	n.Sh(t, `[ -s /var/lib/byokd/dek.json ] && [ ! -e /etc/byokd/apikey ] && ! systemctl is-active --quiet byokd.service`)
}

// fingerprint is the data key fingerprint in byokctl status --json.
func fingerprint(t *testing.T, status string) string {
	t.Helper()
	i := strings.Index(status, `"key_fingerprint":"`)
	if i < 0 {
		t.Fatalf("no key fingerprint in %s", status)
	}
	return status[i : i+strings.Index(status[i+19:], `"`)+19]
}

// TestTPMDeviceIsOpenUnderTheUnit: the kernel's /dev/tpmrm0 is root:tss
// 0660 (Debian's tpm-udev); byokd runs as User=byokd, which must be in tss
// to open it (it was not: backend = "tpm" failed with "permission
// denied"). The container has no TPM: a character device node with
// /dev/null's numbers stands in for it, with the TPM's owner and mode, so
// byokd opens it and then fails on what it reads, not on the permission.
func TestTPMDeviceIsOpenUnderTheUnit(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.MustRun(t, "groupadd", "--system", "tss") // as tpm-udev does
	n.install(t, v1)
	n.Sh(t, `mknod -m 0660 /dev/tpmrm0 c 1 3 && chown root:tss /dev/tpmrm0`)
	n.startKP(t)
	n.configure(t, func(c *config.Config) { c.Sealer.Backend = "tpm" })
	_, _ = n.Run("systemctl", "start", "byokd.service") // fails: no TPM answers
	deadline := time.Now().Add(10 * time.Second)
	var journal string
	for !strings.Contains(journal, "/dev/tpmrm0") {
		if time.Now().After(deadline) {
			t.Fatalf("byokd did not report on /dev/tpmrm0 in 10 s:\n%s", journal)
		}
		time.Sleep(200 * time.Millisecond)
		journal, _ = n.Run("journalctl", "-u", "byokd", "--no-pager", "-o", "cat")
	}
	if strings.Contains(journal, "permission denied") {
		t.Fatalf("byokd may not open the TPM under its unit:\n%s", journal)
	}
	n.Sh(t, `id -nG byokd | tr ' ' '\n' | grep -qx tss`)
}

// TestCallersBySupplementaryGroup: the database's user joins byokd-clients
// as a supplementary group (the sysusers file says so); under the unit's
// ProtectProc=invisible byokd cannot read another user's /proc/PID/status,
// so it read no supplementary groups and refused that caller. The kernel
// hands them over with the connection (SO_PEERGROUPS).
func TestCallersBySupplementaryGroup(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.install(t, v1)
	n.Sh(t, `useradd --system --user-group --no-create-home mongodb && usermod -aG byokd-clients mongodb
useradd --system --user-group --no-create-home stranger`)
	gid := strings.TrimSpace(n.MustRun(t, "getent", "group", "byokd-clients"))
	gid = strings.Split(gid, ":")[2]
	n.startKP(t)
	n.configure(t, func(c *config.Config) {
		c.Socket.AllowedUIDs = []int{0}
		var g int
		fmt.Sscan(gid, &g)
		c.Socket.AllowedGIDs = []int{g}
	})
	n.start(t)
	if out, err := n.Run("runuser", "-u", "mongodb", "--", "byokctl", "status", "--json"); err != nil || !strings.Contains(out, `"state":"UNLOCKED"`) {
		t.Fatalf("a member of byokd-clients (supplementary) was refused: %v\n%s", err, out)
	}
	// The socket is 0660 root... byokd-clients: a stranger cannot even
	// connect; with the socket opened to all, byokd's own check refuses.
	n.MustRun(t, "chmod", "0666", "/run/byokd/keyprovider.sock")
	if out, err := n.Run("runuser", "-u", "stranger", "--", "byokctl", "status"); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("a caller outside the allow-list got through: %v\n%s", err, out)
	}
}

// installMongod installs mongod.service, a unit standing in for mongod,
// with the drop-in byokd ships for it, and starts it with the options of
// systemctl start given.
func (n *node) installMongod(t *testing.T, startOpts ...string) {
	t.Helper()
	n.WriteFile(t, "/etc/systemd/system/mongod.service", []byte("[Unit]\nDescription=stands in for mongod\n[Service]\nExecStart=/bin/sleep infinity\n"), 0o644)
	n.Sh(t, `mkdir -p /etc/systemd/system/mongod.service.d
cp /usr/share/doc/byokd/examples/mongod.service.d/byokd.conf /etc/systemd/system/mongod.service.d/
systemctl daemon-reload`)
	n.MustRun(t, append(append([]string{"systemctl", "start"}, startOpts...), "mongod.service")...)
}

// serving boots a container with v1 installed, configured against a kpemu
// in it, and byokd serving keys.
func serving(t *testing.T) *node {
	t.Helper()
	n := boot(t)
	n.install(t, v1)
	n.startKP(t)
	n.configure(t, nil)
	n.start(t)
	return n
}

// TestUpgradeDoesNotRestartTheDatabase: installing a newer byokd leaves the
// database running (the postinst's try-restart of byokd went through the
// drop-in's Requires= to mongod); the new byokd runs from the next start of
// byokd, which the postinst says.
func TestUpgradeDoesNotRestartTheDatabase(t *testing.T) {
	t.Parallel()
	n := serving(t)
	n.installMongod(t)
	before := n.MustRun(t, "systemctl", "show", "-P", "InvocationID", "mongod.service", "byokd.service")
	out := n.install(t, v2)
	after := n.MustRun(t, "systemctl", "show", "-P", "InvocationID", "mongod.service", "byokd.service")
	if strings.Split(before, "\n")[0] != strings.Split(after, "\n")[0] {
		t.Fatalf("upgrading byokd restarted the database (invocations %q, then %q)\n%s", before, after, out)
	}
	if !strings.Contains(out, "systemctl restart byokd") {
		t.Fatalf("the upgrade does not say how to run the new byokd:\n%s", out)
	}
	n.MustRun(t, "systemctl", "is-active", "--quiet", "mongod.service")
	n.waitState(t, "UNLOCKED", time.Second)
	if v := n.MustRun(t, "byokd", "--version"); !strings.Contains(v, v2) {
		t.Fatalf("installed byokd: %s", v)
	}
}

// TestWatchdog: under the unit's WatchdogSec byokd keeps feeding the
// watchdog while its main loop beats; a byokd that stops (SIGSTOP) is
// killed by systemd and started again, and serves keys again.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.install(t, v1)
	n.startKP(t)
	n.configure(t, nil)
	// The shipped 60 s, shortened for the test.
	n.WriteFile(t, "/etc/systemd/system/byokd.service.d/watchdog.conf", []byte("[Service]\nWatchdogSec=2s\n"), 0o644)
	n.MustRun(t, "systemctl", "daemon-reload")
	n.start(t)
	show := func() (invocation, restarts string) {
		return strings.TrimSpace(n.MustRun(t, "systemctl", "show", "-P", "InvocationID", "byokd.service")),
			strings.TrimSpace(n.MustRun(t, "systemctl", "show", "-P", "NRestarts", "byokd.service"))
	}
	first, _ := show()
	time.Sleep(5 * time.Second) // more than two watchdog periods
	if inv, restarts := show(); inv != first || restarts != "0" {
		journal, _ := n.Run("journalctl", "-u", "byokd", "--no-pager", "-n", "30")
		t.Fatalf("byokd was restarted while serving (restarts %s): the watchdog is not fed\n%s", restarts, journal)
	}
	n.Sh(t, `kill -STOP "$(systemctl show -P MainPID byokd.service)"`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if inv, restarts := show(); inv != first && restarts == "1" {
			break
		}
		if time.Now().After(deadline) {
			journal, _ := n.Run("journalctl", "-u", "byokd", "--no-pager", "-n", "30")
			t.Fatalf("a stopped byokd was not restarted by the watchdog in 15 s\n%s", journal)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if j := n.MustRun(t, "journalctl", "-u", "byokd", "--no-pager"); !strings.Contains(j, "Watchdog timeout") {
		t.Fatalf("no watchdog timeout in the journal:\n%s", j)
	}
	n.waitState(t, "UNLOCKED", 15*time.Second)
}

// TestLockActionStopsTheDatabase: the database unit starts only once byokd
// serves keys (the drop-in); byokd's lock action stops it when the root key
// is disabled and its unlock action starts it again when the key is back —
// run by byokd under its hardening, as the unprivileged user byokd, allowed
// by the polkit rule byokd ships as an example.
func TestLockActionStopsTheDatabase(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.install(t, v1)
	n.Sh(t, `cp /usr/share/doc/byokd/examples/polkit-1/rules.d/50-byokd.rules /etc/polkit-1/rules.d/`)
	n.startKP(t)
	n.configure(t, func(c *config.Config) {
		c.LockActions = []config.LockAction{{Command: []string{"/bin/systemctl", "stop", "mongod.service"}, Timeout: config.Duration(30 * time.Second)}}
		c.UnlockActions = []config.LockAction{{Command: []string{"/bin/systemctl", "start", "mongod.service"}, Timeout: config.Duration(30 * time.Second)}}
	})
	mongod := func() string {
		out, _ := n.Run("systemctl", "is-active", "mongod.service")
		return strings.TrimSpace(out)
	}
	waitMongod := func(want string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for mongod() != want {
			if time.Now().After(deadline) {
				journal, _ := n.Run("journalctl", "-u", "byokd", "-u", "mongod", "--no-pager", "-n", "30")
				t.Fatalf("mongod is %q, not %s, %v on\n%s", mongod(), want, d, journal)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The root key is disabled before byokd first starts: it stays LOCKED,
	// and mongod, which pulls byokd in, waits for it (ExecStartPre) — or is
	// stopped by the lock action that byokd's first lock runs.
	if out, err := n.kpctl("disable"); err != nil {
		t.Fatalf("disable: %v\n%s", err, out)
	}
	n.installMongod(t, "--no-block")
	n.waitState(t, "LOCKED", 10*time.Second)
	time.Sleep(2 * time.Second)
	if st := mongod(); st == "active" {
		journal, _ := n.Run("journalctl", "-u", "byokd", "-u", "mongod", "--no-pager", "-n", "40")
		t.Fatalf("mongod is %q while byokd is locked, want it waiting or stopped\n%s", st, journal)
	}
	// The key comes back: byokd unlocks, and its unlock action starts mongod.
	if out, err := n.kpctl("enable"); err != nil {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	waitMongod("active", 15*time.Second)
	// Disabled: the lock action stops mongod.
	if out, err := n.kpctl("disable"); err != nil {
		t.Fatalf("disable: %v\n%s", err, out)
	}
	waitMongod("inactive", 10*time.Second)
	n.waitState(t, "LOCKED", time.Second)
	// Enabled again: the unlock action starts it.
	if out, err := n.kpctl("enable"); err != nil {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	waitMongod("active", 10*time.Second)
	n.waitState(t, "UNLOCKED", time.Second)
	j := n.MustRun(t, "journalctl", "-u", "byokd", "--no-pager", "-o", "cat")
	if !strings.Contains(j, `"msg":"lock action ran"`) || !strings.Contains(j, `"msg":"unlock action ran"`) {
		t.Fatalf("the actions' audit records are missing:\n%s", j)
	}
}

// TestTwoClusters: two clusters on one host, each with its own root key,
// config, API key, state, socket, client group and user (byokd@a, byokd@b):
// disabling one cluster's root key locks only that one, and a crash of one
// leaves the other serving.
func TestTwoClusters(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.install(t, v1)
	roots := map[string]string{"a": n.startKP(t)}
	out, err := n.kpctl("create-root", "systest-root-b")
	if err != nil {
		t.Fatalf("create-root: %v\n%s", err, out)
	}
	roots["b"] = strings.TrimSpace(out)
	for i, name := range []string{"a", "b"} {
		n.MustRun(t, "groupadd", "--system", "byokd-"+name+"-clients")
		n.configure(t, func(c *config.Config) {
			c.ClusterID = "systest-" + name
			c.KeyProtect.RootKeyID = roots[name]
			c.State.Dir = "/var/lib/private/byokd-" + name
			c.Socket.Path = "/run/byokd-" + name + "/keyprovider.sock"
			c.Socket.Group = "byokd-" + name + "-clients"
			c.Ops.Listen = fmt.Sprintf("127.0.0.1:%d", 9465+i)
		})
		n.Sh(t, `mv /etc/byokd/config.toml /etc/byokd/`+name+`.toml && mv /etc/byokd/apikey /etc/byokd/`+name+`.apikey`)
		n.MustRun(t, "byokctl", "--cluster", name, "check-config", "/etc/byokd/"+name+".toml")
		n.MustRun(t, "systemctl", "start", "byokd@"+name+".socket")
	}
	for _, name := range []string{"a", "b"} {
		if out, err := n.Run("byokctl", "--cluster", name, "wait", "--unlocked", "--timeout", "30s"); err != nil {
			journal, _ := n.Run("journalctl", "-u", "byokd@"+name, "--no-pager", "-n", "50")
			t.Fatalf("byokd@%s: %v\n%s\n%s", name, err, out, journal)
		}
		user := n.Sh(t, `ps -o user= -p "$(systemctl show -P MainPID byokd@`+name+`.service)"`)
		if strings.TrimSpace(user) != "byokd-"+name {
			t.Fatalf("byokd@%s runs as %q", name, user)
		}
		n.Sh(t, `[ "$(stat -c %G /run/byokd-`+name+`/keyprovider.sock)" = byokd-`+name+`-clients ] && [ -s /var/lib/private/byokd-`+name+`/dek.json ]`)
	}
	fa := fingerprint(t, n.MustRun(t, "byokctl", "--cluster", "a", "status", "--json"))
	fb := fingerprint(t, n.MustRun(t, "byokctl", "--cluster", "b", "status", "--json"))
	if fa == fb {
		t.Fatalf("both clusters serve the same data key %s", fa)
	}
	if out, err := n.kpctl("disable"); err != nil { // cluster a's root key
		t.Fatalf("disable: %v\n%s", err, out)
	}
	n.waitClusterState(t, "a", "LOCKED", 3*time.Second)
	time.Sleep(2 * time.Second) // two of b's polls
	n.waitClusterState(t, "b", "UNLOCKED", 0)

	invB := n.MustRun(t, "systemctl", "show", "-P", "InvocationID", "byokd@b.service")
	n.Sh(t, `kill -KILL "$(systemctl show -P MainPID byokd@a.service)"`)
	time.Sleep(3 * time.Second) // byokd@a restarts (RestartSec=2s)
	if now := n.MustRun(t, "systemctl", "show", "-P", "InvocationID", "byokd@b.service"); now != invB {
		t.Fatal("a crash of byokd@a restarted byokd@b")
	}
	n.waitClusterState(t, "b", "UNLOCKED", 0)
	n.waitClusterState(t, "a", "LOCKED", 10*time.Second)
	if out, err := n.kpctl("enable"); err != nil {
		t.Fatalf("enable: %v\n%s", err, out)
	}
	n.waitClusterState(t, "a", "UNLOCKED", 3*time.Second)
	if got := fingerprint(t, n.MustRun(t, "byokctl", "--cluster", "a", "status", "--json")); got != fa {
		t.Fatalf("byokd@a serves %s after the crash, not %s", got, fa)
	}
}

// pykmip runs PyKMIP's client (the container's python3-pykmip) through
// e2e/testdata/pykmip_driver.py against byokd's KMIP server with the
// client files byokctl kmip init wrote, and returns its JSON lines.
func (n *node) pykmip(ops ...string) (string, error) {
	args := []string{"env", "KMIP_HOST=127.0.0.1", "KMIP_PORT=5696", "KMIP_CA=/etc/byokd/kmip/ca.pem",
		"KMIP_CLIENT_CERT=/etc/byokd/kmip/client-mongod.pem", "KMIP_CLIENT_KEY=/etc/byokd/kmip/client-mongod.key",
		"/usr/bin/python3", "/ci/testdata/pykmip_driver.py", "--kmip-version", "1.0"}
	return n.Run(append(args, ops...)...)
}

// TestKMIPUnderTheUnit: byokctl kmip init as root gives server.key to
// byokd; byokd.service, hardened as shipped, reads it, serves KMIP on
// 127.0.0.1:5696 and keeps the objects in /var/lib/byokd/kmip/ (byokd,
// 0700, files 0600); PyKMIP runs Percona's sequence; a lock makes Get fail
// and State Deactivated; after unlock and after a restart of the unit the
// same key comes back.
func TestKMIPUnderTheUnit(t *testing.T) {
	t.Parallel()
	n := boot(t)
	n.install(t, v1)
	n.startKP(t)
	out := n.MustRun(t, "byokctl", "kmip", "init", "--client", "mongod")
	for _, want := range []string{"[kmip]", `allowed_clients = ["mongod"]`, "clientCertificateFile: /etc/byokd/kmip/client-mongod.bundle.pem"} {
		if !strings.Contains(out, want) {
			t.Fatalf("byokctl kmip init does not print %q:\n%s", want, out)
		}
	}
	n.Sh(t, `test "$(stat -c '%U %a' /etc/byokd/kmip/server.key)" = "byokd 600" || { stat /etc/byokd/kmip/server.key; exit 1; }`)
	n.configure(t, func(c *config.Config) {
		c.KMIP.Enabled, c.KMIP.AllowedClients = true, []string{"mongod"}
	})
	n.start(t)

	master := strings.Repeat("5a", 16) + strings.Repeat("c3", 16)
	out, err := n.pykmip("register", master, "percona-master", "activate", "@", "get", "@", "state", "@")
	if err != nil || strings.Count(out, `"ok": true`) != 4 || !strings.Contains(out, `"`+master+`"`) || !strings.Contains(out, `"ACTIVE"`) {
		journal, _ := n.Run("journalctl", "-u", "byokd", "--no-pager", "-n", "30")
		t.Fatalf("PyKMIP under the unit: %v\n%s\n%s", err, out, journal)
	}
	id := regexp.MustCompile(`"op": "register", "ok": true, "result": "([0-9a-f-]{36})"`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no id in %s", out)
	}
	n.Sh(t, `test "$(stat -c '%U %a' /var/lib/byokd/kmip)" = "byokd 700" && test "$(stat -c '%U %a' /var/lib/byokd/kmip/`+id[1]+`.json)" = "byokd 600" || { ls -la /var/lib/byokd/kmip; exit 1; }`)

	if out, err := n.kpctl("disable"); err != nil {
		t.Fatalf("kpemu ctl disable: %v\n%s", err, out)
	}
	n.waitState(t, "LOCKED", 10*time.Second)
	out, _ = n.pykmip("get", id[1], "state", id[1])
	if !strings.Contains(out, `"op": "get", "ok": false`) || !strings.Contains(out, "locked") || !strings.Contains(out, `"DEACTIVATED"`) {
		t.Fatalf("PyKMIP while locked:\n%s", out)
	}
	if out, err := n.kpctl("enable"); err != nil {
		t.Fatalf("kpemu ctl enable: %v\n%s", err, out)
	}
	n.waitState(t, "UNLOCKED", 10*time.Second)
	n.MustRun(t, "systemctl", "restart", "byokd.service")
	n.waitState(t, "UNLOCKED", 30*time.Second)
	out, err = n.pykmip("get", id[1], "state", id[1])
	if err != nil || !strings.Contains(out, `"`+master+`"`) || !strings.Contains(out, `"ACTIVE"`) {
		t.Fatalf("PyKMIP after unlock and a restart: %v\n%s", err, out)
	}
}
