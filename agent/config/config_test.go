// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// noCredentials makes Parse behave as outside systemd.
func noCredentials(t *testing.T) {
	t.Helper()
	t.Setenv(credentialsEnv, "")
}

// errorLines splits a joined error into its messages, checking that each
// is an *Error.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []string
	for _, e := range errs {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Errorf("%q is a %T, not a *config.Error", e, e)
		}
		out = append(out, e.Error())
	}
	return out
}

func TestParseReportsEveryProblemInFixtureWithFileLineAndKey(t *testing.T) {
	noCredentials(t)
	tests := []struct {
		fixture string
		want    []string
	}{
		{"unknown_keys.toml", []string{
			`unknown_keys.toml:2: clusterid: unknown key`,
			`unknown_keys.toml:9: keyprotect.Timeout: unknown key`,
			`unknown_keys.toml:12: poll.intervall: unknown key`,
			`unknown_keys.toml:19: lock_action[0].retries: unknown key`,
		}},
		{"unknown_table.toml", []string{
			`unknown_table.toml:12: keyprotect.tls: unknown table`,
			`unknown_table.toml:15: metrics: unknown table`,
		}},
		{"wrong_types.toml", []string{
			`wrong_types.toml:1: cluster_id: must be a string, not an integer`,
			`wrong_types.toml:8: keyprotect.timeout: must be a duration string such as "15s", not an integer`,
			`wrong_types.toml:9: keyprotect.allow_insecure_http: must be true or false, not a string`,
			`wrong_types.toml:12: poll.jitter: must be a number, not a string`,
			`wrong_types.toml:15: socket.mode: must be an octal string such as "0660", not an integer`,
			`wrong_types.toml:16: socket.allowed_gids[0]: must be an integer, not a string`,
			`wrong_types.toml:17: socket.modes: must be an array of strings, not a string`,
			`wrong_types.toml:20: lock_action[0].command: must be an array of strings, not a string`,
		}},
		{"bad_durations.toml", []string{
			`bad_durations.toml:8: keyprotect.timeout: invalid duration "10 seconds"`,
			`bad_durations.toml:11: poll.interval: invalid duration "15"`,
			`bad_durations.toml:12: poll.offline_grace: invalid duration "1 week"`,
			`bad_durations.toml:16: socket.mode: invalid mode "rw-rw----": want an octal string such as "0660"`,
		}},
		{"missing_required.toml", []string{
			`missing_required.toml:4: keyprotect.url: required`,
			`missing_required.toml:4: keyprotect.instance_id: required`,
			`missing_required.toml:4: keyprotect.root_key_id: required`,
			`missing_required.toml:4: keyprotect.api_key_file: required when $CREDENTIALS_DIRECTORY is not set (systemd LoadCredential=kp-apikey:...)`,
			`missing_required.toml:7: lock_action[0].command: required`,
			`missing_required.toml: cluster_id: required`,
			`missing_required.toml: socket.allowed_uids: required: name at least one allowed caller in socket.allowed_uids or socket.allowed_gids`,
		}},
		{"out_of_range.toml", []string{
			`out_of_range.toml:1: cluster_id: must be printable ASCII without '/'`,
			`out_of_range.toml:8: keyprotect.timeout: must be between 1s and 5m, got "0s"`,
			`out_of_range.toml:12: poll.jitter: must be between 0 and 0.5, got 0.9`,
			`out_of_range.toml:13: poll.proof_interval: "1m" is shorter than poll.interval "2m"`,
			`out_of_range.toml:14: poll.offline_grace: must be between 0s and 7d, got "8d"`,
			`out_of_range.toml:17: socket.allowed_uids[0]: must be between 0 and 4294967294, got -1`,
		}},
		{"insecure.toml", []string{
			`insecure.toml:4: keyprotect.url: uses plain http; set keyprotect.allow_insecure_http = true to allow it (never in production)`,
			`insecure.toml:5: keyprotect.iam_url: uses plain http; set keyprotect.allow_insecure_http = true to allow it (never in production)`,
			`insecure.toml:11: socket.mode: "0666" gives others access; set socket.allow_world_access = true to allow it`,
			`insecure.toml:15: ops.listen: "0.0.0.0:9464" is not a loopback address; set ops.allow_remote_ops = true to allow it`,
		}},
		{"bad_values.toml", []string{
			`bad_values.toml:5: keyprotect.instance_id: must be a UUID, got "my-instance"`,
			`bad_values.toml:6: keyprotect.root_key_id: must be a UUID or an alias of 2-90 characters from [A-Za-z0-9_-], got "x"`,
			`bad_values.toml:7: keyprotect.api_key_file: must be an absolute path`,
			`bad_values.toml:10: sealer.backend: must be one of "auto", "memory", "tpm", "cpacf", got "hsm"`,
			`bad_values.toml:14: socket.allowed_exes: no longer supported: byokd cannot check a caller's executable (another user's /proc/PID/exe needs a capability byokd.service drops, and a caller can exec another program once connected); allow callers by uid and gid, and leave it out or empty`,
			`bad_values.toml:15: socket.modes[1]: must be one of "release", "strict", got "fast"`,
			`bad_values.toml:18: log.level: must be one of "debug", "info", "warn", "error", got "trace"`,
			`bad_values.toml:21: lock_action[0].command[0]: must be an absolute path, got "systemctl"`,
		}},
		{"api_key_inline.toml", []string{
			`api_key_inline.toml:7: keyprotect.api_key: unknown key (the API key is never read from this file: set keyprotect.api_key_file, or pass the systemd credential kp-apikey)`,
		}},
		{"syntax_error.toml", []string{
			`syntax_error.toml:4: basic strings cannot have new lines`,
		}},
		{"duplicate_key.toml", []string{
			`duplicate_key.toml:12: keyprotect: table keyprotect already exists`,
		}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.fixture, ".toml"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "config", tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(tt.fixture, data)
			if cfg != nil {
				t.Errorf("Parse returned a config along with %v", err)
			}
			if got := errorLines(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseNeverEchoesAValueThatMayBeTheAPIKey(t *testing.T) {
	noCredentials(t)
	const secret = "fixture-secret-0123456789abcdef"
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "config", "api_key_inline.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), secret) {
		t.Fatal("fixture lost its secret; the test proves nothing")
	}
	docs := map[string]string{
		"unknown key":          string(data),
		"api_key_file":         strings.Replace(minimal, `"/etc/byokd/kp-apikey"`, `"`+secret+`"`, 1),
		"url with credentials": strings.Replace(minimal, `"https://kp.example"`, `"https://u:`+secret+`@kp.example"`, 1),
		"unparsable url":       strings.Replace(minimal, `"https://kp.example"`, `"https://`+secret+`%zz"`, 1),
	}
	for name, doc := range docs {
		_, err := Parse("config.toml", []byte(doc))
		if err == nil {
			t.Errorf("%s: Parse accepted the file", name)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error shows the value: %v", name, err)
		}
	}
}

// minimal is a valid configuration of 8 lines; cases below add to it.
const minimal = `cluster_id = "c1"
[keyprotect]
url = "https://kp.example"
instance_id = "3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10"
root_key_id = "byokd-root"
api_key_file = "/etc/byokd/kp-apikey"
[socket]
allowed_uids = [999]
`

func TestParseRejectsBadDocuments(t *testing.T) {
	noCredentials(t)
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"dotted key before any table", "poll.interval = 10\n" + minimal,
			[]string{`config.toml:1: poll.interval: must be a duration string such as "15s", not an integer`}},
		{"key in an inline table", "ops = { listen = \"127.0.0.1:1\", allow_remote_ops = \"yes\" }\n" + minimal,
			[]string{`config.toml:1: ops.allow_remote_ops: must be true or false, not a string`}},
		{"element of a multi-line array", strings.Replace(minimal, "allowed_uids = [999]", "allowed_uids = [\n  999,\n  \"mongodb\",\n]", 1),
			[]string{`config.toml:10: socket.allowed_uids[1]: must be an integer, not a string`}},
		{"lock action in an array of inline tables", "lock_action = [\n  { command = [\"/bin/true\"] },\n  { command = [\"true\"] },\n]\n" + minimal,
			[]string{`config.toml:3: lock_action[1].command[0]: must be an absolute path, got "true"`}},
		{"key after a table header belongs to that table", minimal + "ops = { listen = \"127.0.0.1:1\" }\n",
			[]string{`config.toml:9: socket.ops: unknown key`}},
		{"second array table", minimal + "[[lock_action]]\ncommand = [\"/bin/true\"]\n[[lock_action]]\ncommand = [\"/bin/false\"]\ntimeout = \"2h\"\n",
			[]string{`config.toml:13: lock_action[1].timeout: must be between 1s and 1h, got "2h"`}},
		{"explicit zero lock action timeout", minimal + "[[lock_action]]\ncommand = [\"/bin/true\"]\ntimeout = \"0s\"\n",
			[]string{`config.toml:11: lock_action[0].timeout: must be between 1s and 1h, got "0s"`}},
		{"empty lock action command", minimal + "[[lock_action]]\ncommand = []\n",
			[]string{`config.toml:10: lock_action[0].command: must not be empty`}},
		{"table written as array of tables", minimal + "[[poll]]\n",
			[]string{`config.toml:9: poll: must be a table [poll], not an array of tables [[poll]]`}},
		{"array of tables written as table", minimal + "[lock_action]\ncommand = [\"/bin/true\"]\n",
			[]string{`config.toml:9: lock_action: must be an array of tables [[lock_action]], not a table [lock_action]`}},
		{"string written as table", minimal + "[log.level]\n",
			[]string{`config.toml:9: log.level: must be a string, not a table`}},
		{"key in another case", "Cluster_ID = \"c1\"\n" + strings.TrimPrefix(minimal, "cluster_id = \"c1\"\n"),
			[]string{`config.toml:1: Cluster_ID: unknown key`}},
		{"empty cluster id", strings.Replace(minimal, `"c1"`, `""`, 1),
			[]string{`config.toml:1: cluster_id: must not be empty`}},
		{"cluster id too long", strings.Replace(minimal, `"c1"`, `"`+strings.Repeat("x", 129)+`"`, 1),
			[]string{`config.toml:1: cluster_id: longer than 128 characters`}},
		{"cluster id with a trailing space", strings.Replace(minimal, `"c1"`, `"c1 "`, 1),
			[]string{`config.toml:1: cluster_id: must not start or end with a space`}},
		{"cluster id not ascii", strings.Replace(minimal, `"c1"`, `"clüster"`, 1),
			[]string{`config.toml:1: cluster_id: must be printable ASCII without '/'`}},
		{"url without scheme", strings.Replace(minimal, `"https://kp.example"`, `"kp.example"`, 1),
			[]string{`config.toml:3: keyprotect.url: must be an absolute URL such as "https://us-south.kms.cloud.ibm.com"`}},
		{"url with credentials", strings.Replace(minimal, `"https://kp.example"`, `"https://me:pw@kp.example"`, 1),
			[]string{`config.toml:3: keyprotect.url: must not contain a user or password`}},
		{"url without host", strings.Replace(minimal, `"https://kp.example"`, `"https://:443"`, 1),
			[]string{`config.toml:3: keyprotect.url: must be an absolute URL such as "https://us-south.kms.cloud.ibm.com"`}},
		{"url with a query", strings.Replace(minimal, `"https://kp.example"`, `"https://kp.example/?x=1"`, 1),
			[]string{`config.toml:3: keyprotect.url: must not have a query or fragment, got "https://kp.example/?x=1"`}},
		{"url of another scheme", strings.Replace(minimal, `"https://kp.example"`, `"ftp://kp.example"`, 1),
			[]string{`config.toml:3: keyprotect.url: must be an https URL, got scheme "ftp"`}},
		{"unknown sub-table", minimal + "[keyprotect.x]\n",
			[]string{`config.toml:9: keyprotect.x: unknown table`}},
		{"key ring with spaces", strings.Replace(minimal, "[socket]", "key_ring = \"my ring\"\n[socket]", 1),
			[]string{`config.toml:7: keyprotect.key_ring: must be 2-100 characters from [A-Za-z0-9-], got "my ring"`}},
		{"relative ca file", strings.Replace(minimal, "[socket]", "ca_file = \"ca.pem\"\n[socket]", 1),
			[]string{`config.toml:7: keyprotect.ca_file: must be an absolute path, got "ca.pem"`}},
		{"api key file set empty", strings.Replace(minimal, `"/etc/byokd/kp-apikey"`, `""`, 1),
			[]string{`config.toml:6: keyprotect.api_key_file: must not be empty; leave it out to use the systemd credential kp-apikey`}},
		{"timeout too long", strings.Replace(minimal, "[socket]", "timeout = \"6m\"\n[socket]", 1),
			[]string{`config.toml:7: keyprotect.timeout: must be between 1s and 5m, got "6m"`}},
		{"poll interval under a second", minimal + "[poll]\ninterval = \"500ms\"\n",
			[]string{`config.toml:10: poll.interval: must be between 1s and 1h, got "500ms"`}},
		{"poll interval longer than the default proof interval", minimal + "[poll]\ninterval = \"1h\"\n",
			[]string{`config.toml:9: poll.proof_interval: "10m" is shorter than poll.interval "1h"`}},
		{"jitter not a number", minimal + "[poll]\njitter = nan\n",
			[]string{`config.toml:10: poll.jitter: must be between 0 and 0.5, got NaN`}},
		{"negative jitter", minimal + "[poll]\njitter = -0.1\n",
			[]string{`config.toml:10: poll.jitter: must be between 0 and 0.5, got -0.1`}},
		{"offline grace just over a week", minimal + "[poll]\noffline_grace = \"7d1s\"\n",
			[]string{`config.toml:10: poll.offline_grace: must be between 0s and 7d, got "168h0m1s"`}},
		{"negative offline grace", minimal + "[poll]\noffline_grace = \"-1s\"\n",
			[]string{`config.toml:10: poll.offline_grace: must be between 0s and 7d, got "-1s"`}},
		{"confirmation window over an hour", minimal + "[poll]\nconfirm_window = \"61m\"\n",
			[]string{`config.toml:10: poll.confirm_window: must be between 0s and 1h, got "1h1m"`}},
		{"negative confirmation window", minimal + "[poll]\nconfirm_window = \"-1s\"\n",
			[]string{`config.toml:10: poll.confirm_window: must be between 0s and 1h, got "-1s"`}},
		{"tpm backend without device", minimal + "[sealer]\nbackend = \"tpm\"\ntpm_device = \"\"\n",
			[]string{`config.toml:11: sealer.tpm_device: must not be empty`}},
		{"socket path relative", strings.Replace(minimal, "[socket]", "[socket]\npath = \"byokd.sock\"", 1),
			[]string{`config.toml:8: socket.path: must be an absolute path, got "byokd.sock"`}},
		{"socket readable by others", strings.Replace(minimal, "[socket]", "[socket]\nmode = \"0664\"", 1),
			[]string{`config.toml:8: socket.mode: "0664" gives others access; set socket.allow_world_access = true to allow it`}},
		{"socket mode with setgid bit", strings.Replace(minimal, "[socket]", "[socket]\nmode = \"2660\"", 1),
			[]string{`config.toml:8: socket.mode: invalid mode "2660": want an octal string such as "0660"`}},
		{"socket group with a colon", strings.Replace(minimal, "[socket]", "[socket]\ngroup = \"a:b\"", 1),
			[]string{`config.toml:8: socket.group: "a:b" is not a group name`}},
		{"no allowed caller", strings.Replace(minimal, "allowed_uids = [999]", "allowed_uids = []\nallowed_gids = []", 1),
			[]string{`config.toml:8: socket.allowed_uids: required: name at least one allowed caller in socket.allowed_uids or socket.allowed_gids`}},
		{"uid -1 as unsigned", strings.Replace(minimal, "[999]", "[4294967295]", 1),
			[]string{`config.toml:8: socket.allowed_uids[0]: must be between 0 and 4294967294, got 4294967295`}},
		{"allowed exes", strings.Replace(minimal, "[socket]", "[socket]\nallowed_exes = [\"/usr/bin/mongod\"]", 1),
			[]string{`config.toml:8: socket.allowed_exes: no longer supported: byokd cannot check a caller's executable (another user's /proc/PID/exe needs a capability byokd.service drops, and a caller can exec another program once connected); allow callers by uid and gid, and leave it out or empty`}},
		{"no socket mode", strings.Replace(minimal, "[socket]", "[socket]\nmodes = []", 1),
			[]string{`config.toml:8: socket.modes: must name at least one of "release" and "strict"`}},
		{"socket mode twice", strings.Replace(minimal, "[socket]", "[socket]\nmodes = [\"strict\", \"strict\"]", 1),
			[]string{`config.toml:8: socket.modes[1]: "strict" is listed twice`}},
		{"ops on every address", minimal + "[ops]\nlisten = \":9464\"\n",
			[]string{`config.toml:10: ops.listen: ":9464" is not a loopback address; set ops.allow_remote_ops = true to allow it`}},
		{"ops on a host name", minimal + "[ops]\nlisten = \"metrics.internal:9464\"\n",
			[]string{`config.toml:10: ops.listen: "metrics.internal:9464" is not a loopback address; set ops.allow_remote_ops = true to allow it`}},
		{"ops without port", minimal + "[ops]\nlisten = \"127.0.0.1\"\n",
			[]string{`config.toml:10: ops.listen: must be host:port such as "127.0.0.1:9464", got "127.0.0.1"`}},
		{"ops on a port out of range", minimal + "[ops]\nlisten = \"127.0.0.1:70000\"\n",
			[]string{`config.toml:10: ops.listen: port must be a number from 0 to 65535, got "70000"`}},
		{"kmip without allowed clients", minimal + "[kmip]\nenabled = true\n",
			[]string{`config.toml:9: kmip.allowed_clients: required when kmip.enabled = true: the Common Names of the client certificates that may connect`}},
		{"kmip on every address", minimal + "[kmip]\nenabled = true\nlisten = \"0.0.0.0:5696\"\nallowed_clients = [\"mongod\"]\n",
			[]string{`config.toml:11: kmip.listen: "0.0.0.0:5696" is not a loopback address; set kmip.allow_remote = true to allow it`}},
		{"kmip client name", minimal + "[kmip]\nenabled = true\nallowed_clients = [\"mongo d\"]\n",
			[]string{`config.toml:11: kmip.allowed_clients[0]: must be 1 to 64 letters, digits, '.', '_' or '-', got "mongo d"`}},
		{"kmip relative key file", minimal + "[kmip]\nenabled = true\nkey_file = \"server.key\"\nallowed_clients = [\"mongod\"]\n",
			[]string{`config.toml:11: kmip.key_file: must be an absolute path, got "server.key"`}},
		{"log format", minimal + "[log]\nformat = \"logfmt\"\n",
			[]string{`config.toml:10: log.format: must be one of "json", "text", got "logfmt"`}},
		{"key defined twice", strings.Replace(minimal, "[socket]", "timeout = \"1s\"\ntimeout = \"2s\"\n[socket]", 1),
			[]string{`config.toml:8: keyprotect.timeout: key timeout is already defined`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("config.toml", []byte(tt.doc))
			if cfg != nil {
				t.Errorf("Parse returned a config along with %v", err)
			}
			if got := errorLines(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseAcceptsEdgeValues(t *testing.T) {
	noCredentials(t)
	tests := []struct {
		name  string
		doc   string
		check func(*Config) bool
	}{
		{"integer jitter", minimal + "[poll]\njitter = 0\n", func(c *Config) bool { return c.Poll.Jitter == 0 }},
		{"zero offline grace fails closed at once", minimal + "[poll]\noffline_grace = \"0s\"\n", func(c *Config) bool { return c.Poll.OfflineGrace == 0 }},
		{"offline grace of a week in days", minimal + "[poll]\noffline_grace = \"7d\"\n", func(c *Config) bool { return c.Poll.OfflineGrace == Duration(7*24*time.Hour) }},
		{"proof interval equal to interval", minimal + "[poll]\ninterval = \"1h\"\nproof_interval = \"1h\"\n", func(c *Config) bool { return c.Poll.ProofInterval == c.Poll.Interval }},
		{"root key by uuid", strings.Replace(minimal, `"byokd-root"`, `"8E7D6C5B-4A39-4281-B7F6-E5D4C3B2A190"`, 1), func(c *Config) bool { return c.KeyProtect.RootKeyID == "8E7D6C5B-4A39-4281-B7F6-E5D4C3B2A190" }},
		{"gids only", strings.Replace(minimal, "allowed_uids = [999]", "allowed_gids = [0]", 1), func(c *Config) bool { return len(c.Socket.AllowedUIDs) == 0 && c.Socket.AllowedGIDs[0] == 0 }},
		{"both socket modes", strings.Replace(minimal, "[socket]", "[socket]\nmodes = [\"strict\", \"release\"]", 1), func(c *Config) bool { return slices.Equal(c.Socket.Modes, []string{"strict", "release"}) }},
		{"octal mode forms", strings.Replace(minimal, "[socket]", "[socket]\nmode = \"0o600\"", 1), func(c *Config) bool { return c.Socket.Mode == 0o600 }},
		{"socket open to all with consent", strings.Replace(minimal, "[socket]", "[socket]\nmode = \"0666\"\nallow_world_access = true", 1), func(c *Config) bool { return c.Socket.Mode == 0o666 }},
		{"ops off", minimal + "[ops]\nlisten = \"\"\n", func(c *Config) bool { return c.Ops.Listen == "" }},
		{"ops on localhost", minimal + "[ops]\nlisten = \"localhost:9464\"\n", func(c *Config) bool { return c.Ops.Listen == "localhost:9464" }},
		{"ops on ipv6 loopback", minimal + "[ops]\nlisten = \"[::1]:9464\"\n", func(c *Config) bool { return c.Ops.Listen == "[::1]:9464" }},
		{"ops remote with consent", minimal + "[ops]\nlisten = \"0.0.0.0:9464\"\nallow_remote_ops = true\n", func(c *Config) bool { return c.Ops.AllowRemoteOps }},
		{"emulator over http with consent", strings.Replace(minimal, `"https://kp.example"`, `"http://127.0.0.1:8080"`+"\niam_url = \"http://127.0.0.1:8080/\"\nallow_insecure_http = true", 1),
			func(c *Config) bool { return c.KeyProtect.TokenURL() == "http://127.0.0.1:8080/identity/token" }},
		{"lock action timeout defaults to 30s", minimal + "[[lock_action]]\ncommand = [\"/bin/true\"]\n[[lock_action]]\ncommand = [\"/bin/false\"]\ntimeout = \"5s\"\n",
			func(c *Config) bool {
				return len(c.LockActions) == 2 && c.LockActions[0].Timeout == Duration(30*time.Second) && c.LockActions[1].Timeout == Duration(5*time.Second)
			}},
		{"lock actions as inline tables", "lock_action = [{ command = [\"/bin/true\"] }]\n" + minimal, func(c *Config) bool {
			return len(c.LockActions) == 1 && c.LockActions[0].Timeout == Duration(30*time.Second)
		}},
		{"tables as dotted keys", "cluster_id = \"c1\"\nkeyprotect.url = \"https://kp.example\"\nkeyprotect.instance_id = \"3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10\"\nkeyprotect.root_key_id = \"ab\"\nkeyprotect.api_key_file = \"/k\"\nsocket.allowed_uids = [1]\n",
			func(c *Config) bool { return c.KeyProtect.RootKeyID == "ab" && c.Socket.AllowedUIDs[0] == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("config.toml", []byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.check(cfg) {
				t.Errorf("unexpected config: %+v", cfg)
			}
		})
	}
}

func TestMinimalFileGetsEveryDefault(t *testing.T) {
	noCredentials(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "config", "valid_minimal.toml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("valid_minimal.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		ClusterID: "prod-mongo-eu1",
		KeyProtect: KeyProtect{
			URL:        "https://us-south.kms.cloud.ibm.com",
			IAMURL:     "https://iam.cloud.ibm.com",
			InstanceID: "3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10",
			RootKeyID:  "byokd-root",
			APIKeyFile: "/etc/byokd/kp-apikey",
			Timeout:    Duration(10 * time.Second),
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
			Path:        "/run/byokd/keyprovider.sock",
			Mode:        0o660,
			Group:       "byokd-clients",
			AllowedGIDs: []int{998},
			Modes:       []string{"release"},
		},
		Ops: Ops{Listen: "127.0.0.1:9464"},
		KMIP: KMIP{Listen: "127.0.0.1:5696", CAFile: "/etc/byokd/kmip/ca.pem",
			CertFile: "/etc/byokd/kmip/server.pem", KeyFile: "/etc/byokd/kmip/server.key"},
		Log: Log{Level: "info", Format: "json"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got.KeyProtect.TokenURL() != "https://iam.cloud.ibm.com/identity/token" {
		t.Errorf("TokenURL = %q", got.KeyProtect.TokenURL())
	}
	if got.State.DEKPath() != "/var/lib/byokd/dek.json" {
		t.Errorf("DEKPath = %q", got.State.DEKPath())
	}
	if l := got.Loosened(); len(l) != 0 {
		t.Errorf("defaults are loosened: %q", l)
	}
}

func TestExampleConfigParsesAndDocumentsTheDefaults(t *testing.T) {
	t.Setenv(credentialsEnv, "/run/credentials/byokd.service")
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "byokd.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("byokd.example.toml", data)
	if err != nil {
		t.Fatalf("the example does not parse:\n%v", err)
	}
	def := defaults()
	// The example claims to show each default; hold it to that.
	for name, pair := range map[string][2]any{
		"keyprotect.iam_url": {cfg.KeyProtect.IAMURL, def.KeyProtect.IAMURL},
		"keyprotect.timeout": {cfg.KeyProtect.Timeout, def.KeyProtect.Timeout},
		"[state]":            {cfg.State, def.State},
		"[poll]":             {cfg.Poll, def.Poll},
		"[sealer]":           {cfg.Sealer, def.Sealer},
		"socket.path":        {cfg.Socket.Path, def.Socket.Path},
		"socket.mode":        {cfg.Socket.Mode, def.Socket.Mode},
		"socket.group":       {cfg.Socket.Group, def.Socket.Group},
		"socket.modes":       {cfg.Socket.Modes, def.Socket.Modes},
		"[ops]":              {cfg.Ops, def.Ops},
		"[log]":              {cfg.Log, def.Log},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("example sets %s to %v, the default is %v", name, pair[0], pair[1])
		}
	}
	if want := "/run/credentials/byokd.service/kp-apikey"; cfg.KeyProtect.APIKeyFile != want {
		t.Errorf("api key file = %q, want the credential %q", cfg.KeyProtect.APIKeyFile, want)
	}
	if len(cfg.LockActions) != 1 || cfg.LockActions[0].Command[0] != "/bin/systemctl" {
		t.Errorf("lock actions = %+v", cfg.LockActions)
	}
	if l := cfg.Loosened(); len(l) != 0 {
		t.Errorf("the example loosens: %q", l)
	}
	// Every key of the schema appears in the example, set or commented out.
	shown := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		key, _, ok := strings.Cut(strings.TrimLeft(line, "# "), " = ")
		if ok {
			shown[key] = true
		}
	}
	for _, key := range schemaKeys(reflect.TypeFor[Config]()) {
		if !shown[key] {
			t.Errorf("the example does not show %s", key)
		}
	}
}

// schemaKeys lists the leaf keys of t, by their last part.
func schemaKeys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tomlKey(f)
		switch {
		case isTable(f.Type):
			out = append(out, schemaKeys(f.Type)...)
		case isTableArray(f.Type):
			out = append(out, schemaKeys(f.Type.Elem())...)
		default:
			out = append(out, name)
		}
	}
	return out
}

func TestParseWithoutAPIKeyFileUsesTheSystemdCredential(t *testing.T) {
	t.Setenv(credentialsEnv, "/run/credentials/byokd.service")
	doc := strings.Replace(minimal, "api_key_file = \"/etc/byokd/kp-apikey\"\n", "", 1)
	cfg, err := Parse("config.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/run/credentials/byokd.service/kp-apikey"; cfg.KeyProtect.APIKeyFile != want {
		t.Errorf("api key file = %q, want %q", cfg.KeyProtect.APIKeyFile, want)
	}
	noCredentials(t)
	_, err = Parse("config.toml", []byte(doc))
	want := `config.toml:2: keyprotect.api_key_file: required when $CREDENTIALS_DIRECTORY is not set (systemd LoadCredential=kp-apikey:...)`
	if err == nil || err.Error() != want {
		t.Errorf("outside systemd: %v, want %s", err, want)
	}
}

func TestLoosenedListsEverySettingLessSafeThanItsDefault(t *testing.T) {
	noCredentials(t)
	doc := strings.Replace(minimal, "[socket]", "allow_insecure_http = true\n[socket]\nmode = \"0666\"\nallow_world_access = true", 1) +
		"[ops]\nlisten = \"0.0.0.0:9464\"\nallow_remote_ops = true\n" +
		"[kmip]\nenabled = true\nlisten = \"0.0.0.0:5696\"\nallow_remote = true\nallowed_clients = [\"mongod\"]\n" +
		"[poll]\ninterval = \"1m\"\nproof_interval = \"1h\"\noffline_grace = \"2d\"\nconfirm_window = \"5m\"\nlock_on_expired = false\n"
	cfg, err := Parse("config.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Loosened()
	for _, want := range []string{
		"keyprotect.allow_insecure_http = true",
		`socket.allow_world_access = true: socket mode 0666`,
		`ops.allow_remote_ops = true: the ops listener "0.0.0.0:9464"`,
		`kmip.allow_remote = true: the KMIP server "0.0.0.0:5696"`,
		`poll.interval = "1m"`,
		`poll.offline_grace = "2d"`,
		`poll.confirm_window = "5m"`,
	} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("Loosened() lacks %q:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if len(got) != 7 {
		t.Errorf("Loosened() has %d entries, want 7:\n%s", len(got), strings.Join(got, "\n"))
	}
	if slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "lock_on_expired") }) {
		t.Error("Loosened() lists lock_on_expired = false, the default")
	}
}

func TestDurationParsesOperatorStrings(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"15s", 15 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"1h30m", 90 * time.Minute, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"0s", 0, false},
		{"0", 0, false},
		{"-1s", -time.Second, false},
		{"", 0, true},
		{"10", 0, true},
		{"10 seconds", 0, true},
		{"1 week", 0, true},
		{"d", 0, true},
		{"-1d", 0, true},
		{"1.5d", 0, true},
		{"1d-1h", 0, true},
		{"1dd", 0, true},
		{"99999d", 0, true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("UnmarshalText(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			if want := `invalid duration "` + tt.in + `"`; err.Error() != want {
				t.Errorf("UnmarshalText(%q) error = %q, want %q", tt.in, err, want)
			}
			continue
		}
		if time.Duration(d) != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, time.Duration(d), tt.want)
		}
	}
}

func TestDurationPrintsWithoutTrailingZeroUnits(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{500 * time.Millisecond, "500ms"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{36 * time.Hour, "36h"},
		{7 * 24 * time.Hour, "7d"},
		{-time.Second, "-1s"},
	}
	for _, tt := range tests {
		text, err := Duration(tt.in).MarshalText()
		if err != nil || string(text) != tt.want {
			t.Errorf("MarshalText(%v) = %q, %v, want %q", tt.in, text, err, tt.want)
		}
		var back Duration
		if err := back.UnmarshalText(text); err != nil || time.Duration(back) != tt.in {
			t.Errorf("%q does not read back as %v: %v, %v", text, tt.in, time.Duration(back), err)
		}
	}
}

func TestFileModeReadsOctalStringsOnly(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0660", 0o660, true},
		{"660", 0o660, true},
		{"0o600", 0o600, true},
		{"0000", 0, true},
		{"0777", 0o777, true},
		{"", 0, false},
		{"0", 0, false},
		{"66", 0, false},
		{"0668", 0, false},
		{"1777", 0, false},
		{"04755", 0, false},
		{"rw-rw----", 0, false},
		{"+660", 0, false},
		{"6_60", 0, false},
	}
	for _, tt := range tests {
		var m FileMode
		err := m.UnmarshalText([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && uint32(m) != tt.want) {
			t.Errorf("UnmarshalText(%q) = %04o, %v; want %04o, ok %v", tt.in, uint32(m), err, tt.want, tt.ok)
		}
	}
	if s := FileMode(0o640).String(); s != "0640" {
		t.Errorf("String() = %q", s)
	}
	if p := FileMode(0o640).Perm(); p != 0o640 {
		t.Errorf("Perm() = %v", p)
	}
}

func TestErrorFormatsItsLocation(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{File: "/etc/byokd/config.toml", Line: 12, Key: "keyprotect.timeout", Msg: `invalid duration "10 seconds"`},
			`/etc/byokd/config.toml:12: keyprotect.timeout: invalid duration "10 seconds"`},
		{&Error{File: "c.toml", Key: "cluster_id", Msg: "required"}, `c.toml: cluster_id: required`},
		{&Error{File: "c.toml", Msg: "mode 0666"}, `c.toml: mode 0666`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	inner := errors.New("inner")
	if !errors.Is(&Error{Err: inner}, inner) {
		t.Error("Error does not unwrap")
	}
}

// TestParseAcceptsAnEmptyAllowedExes: configs of earlier releases, their
// shipped example included, say allowed_exes = []; they still load.
func TestParseAcceptsAnEmptyAllowedExes(t *testing.T) {
	noCredentials(t)
	if _, err := Parse("config.toml", []byte(strings.Replace(minimal, "[socket]", "[socket]\nallowed_exes = []", 1))); err != nil {
		t.Fatal(err)
	}
}
