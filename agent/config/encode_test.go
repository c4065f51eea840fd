// SPDX-License-Identifier: Apache-2.0

package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// everyKeySet is a valid configuration with every key set to a value other
// than its default.
func everyKeySet() *Config {
	return &Config{
		ClusterID: "prod-mongo-eu1",
		KeyProtect: KeyProtect{
			URL:               "http://127.0.0.1:8443/kp",
			IAMURL:            "http://127.0.0.1:8444",
			InstanceID:        "3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10",
			RootKeyID:         "byokd-root",
			KeyRing:           "db-ring",
			APIKeyFile:        "/etc/byokd/kp-apikey",
			CAFile:            "/etc/byokd/ca.pem",
			Timeout:           Duration(3 * time.Second),
			AllowInsecureHTTP: true,
		},
		State: State{Dir: "/srv/byokd", Provision: true},
		Poll: Poll{
			Interval:      Duration(2 * time.Second),
			Jitter:        0.25,
			ProofInterval: Duration(90 * time.Second),
			OfflineGrace:  Duration(7 * 24 * time.Hour),
			ConfirmWindow: Duration(30 * time.Second),
			LockOnExpired: true,
		},
		Sealer: Sealer{Backend: "tpm", TPMDevice: "/dev/tpm0"},
		Socket: Socket{
			Path:             "/run/db's keys/kp.sock",
			Mode:             0o666,
			Group:            "mongodb",
			AllowedUIDs:      []int{0, 999},
			AllowedGIDs:      []int{998},
			Modes:            []string{"strict", "release"},
			AllowWorldAccess: true,
		},
		Ops: Ops{Listen: "[::]:9464", AllowRemoteOps: true},
		KMIP: KMIP{Enabled: true, Listen: "[::]:5696", CAFile: "/k/ca.pem", CertFile: "/k/s.pem", KeyFile: "/k/s.key",
			AllowedClients: []string{"mongod", "pbm"}, AllowRemote: true},
		Log: Log{Level: "debug", Format: "text"},
		LockActions: []LockAction{
			{Command: []string{"/bin/systemctl", "stop", "mongod.service"}, Timeout: Duration(90 * time.Second)},
			{Command: []string{"/bin/sh", "-c", "echo \"locked\"\n"}, Timeout: Duration(time.Second)},
		},
		UnlockActions: []LockAction{
			{Command: []string{"/bin/systemctl", "start", "mongod.service"}, Timeout: Duration(2 * time.Minute)},
		},
	}
}

// zeroLeaves lists the keys of v left at their zero value.
func zeroLeaves(v reflect.Value, prefix string) []string {
	var out []string
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		path := join(prefix, tomlKey(f))
		switch {
		case isTable(f.Type):
			out = append(out, zeroLeaves(fv, path)...)
		case isTableArray(f.Type) && fv.Len() > 0:
			for j := range fv.Len() {
				out = append(out, zeroLeaves(fv.Index(j), path)...)
			}
		case fv.IsZero() || (fv.Kind() == reflect.Slice && fv.Len() == 0):
			out = append(out, path)
		}
	}
	return out
}

func TestMarshalRoundTrips(t *testing.T) {
	noCredentials(t)
	want := everyKeySet()
	// socket.allowed_exes is accepted only empty (a key of earlier releases).
	if z := slices.DeleteFunc(zeroLeaves(reflect.ValueOf(want).Elem(), ""), func(k string) bool { return k == "socket.allowed_exes" }); len(z) > 0 {
		t.Fatalf("the test config leaves %v unset: set every key, so that each is round-tripped", z)
	}
	data, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip\n got %+v\nwant %+v\nfile:\n%s", got, want, data)
	}
}

func TestMarshalLeavesOutWhatDefaultsToNothing(t *testing.T) {
	t.Setenv(credentialsEnv, "/run/credentials/byokd.service")
	want := Default()
	want.ClusterID = "c1"
	want.KeyProtect.URL = "https://kp.example"
	want.KeyProtect.InstanceID = "3b9f1c2a-7d4e-4f8a-9c1b-2e6d5a4f7b10"
	want.KeyProtect.RootKeyID = "byokd-root"
	want.Socket.AllowedGIDs = []int{998}
	data, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"api_key_file", "allowed_uids", "lock_action"} {
		if strings.Contains(string(data), key) {
			t.Errorf("an empty %s is written:\n%s", key, data)
		}
	}
	got, err := Parse("config.toml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	want.KeyProtect.APIKeyFile = "/run/credentials/byokd.service/kp-apikey"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip\n got %+v\nwant %+v\nfile:\n%s", got, want, data)
	}
}
