// SPDX-License-Identifier: Apache-2.0

package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsonLogger logs JSON without the time, as byokd does (level debug).
func jsonLogger(buf *bytes.Buffer, source bool) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: source,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}}))
}

func TestRecordIsTheHandTypedOne(t *testing.T) {
	var got, want bytes.Buffer
	Warn(jsonLogger(&got, false), "operator accepted another data encryption key", AcceptKey,
		From("0123456789abcdef"), FromGeneration(1), To("fedcba9876543210"), ToGeneration(2),
		UID(0), PID(4242), Path("/var/lib/byokd/identity.json"))
	jsonLogger(&want, false).Warn("operator accepted another data encryption key", "event", "audit", "action", "accept-key",
		"from", "0123456789abcdef", "from_generation", uint32(1), "to", "fedcba9876543210", "to_generation", uint32(2),
		"uid", 0, "pid", 4242, "path", "/var/lib/byokd/identity.json")
	if got.String() != want.String() {
		t.Errorf("record\n got %s\nwant %s", got.String(), want.String())
	}
	const exact = `{"level":"WARN","msg":"operator accepted another data encryption key","event":"audit","action":"accept-key",` +
		`"from":"0123456789abcdef","from_generation":1,"to":"fedcba9876543210","to_generation":2,"uid":0,"pid":4242,` +
		`"path":"/var/lib/byokd/identity.json"}` + "\n"
	if got.String() != exact {
		t.Errorf("record\n got %s\nwant %s", got.String(), exact)
	}
}

// Every field keeps the key operators and tests parse.
func TestFieldKeysAndValues(t *testing.T) {
	for _, tc := range []struct {
		f    Field
		want string
	}{
		{Reason("r"), `"reason":"r"`},
		{Cause("key-disabled"), `"cause":"key-disabled"`},
		{From("UNLOCKED"), `"from":"UNLOCKED"`},
		{To("x"), `"to":"x"`},
		{State("LOCKED"), `"state":"LOCKED"`},
		{RootKeyID("k"), `"root_key_id":"k"`},
		{KeyVersion("v2"), `"key_version":"v2"`},
		{PreviousVersion("v1"), `"previous_version":"v1"`},
		{Fingerprint("f"), `"fingerprint":"f"`},
		{WrappedFingerprint("w"), `"wrapped_fingerprint":"w"`},
		{Generation(3), `"generation":3`},
		{FromGeneration(3), `"from_generation":3`},
		{ToGeneration(4), `"to_generation":4`},
		{Path("/p"), `"path":"/p"`},
		{KeptAs("/p.prev"), `"kept_as":"/p.prev"`},
		{Op("unlock"), `"op":"unlock"`},
		{OperatorAction("restore it"), `"operator_action":"restore it"`},
		{WipeError("busy"), `"wipe_error":"busy"`},
		{Method("GetDataKey"), `"method":"GetDataKey"`},
		{UID(uint32(65534)), `"uid":65534`},
		{GID(uint32(65534)), `"gid":65534`},
		{PID(int32(7)), `"pid":7`},
		{Groups([]uint32{7, 500}), `"groups":[7,500]`},
		{Command([]string{"/bin/sh", "-c", "true"}), `"command":["/bin/sh","-c","true"]`},
		{Duration(1500 * time.Millisecond), `"duration":1500000000`},
		{Timeout(5 * time.Second), `"timeout":5000000000`},
		{Output("out\n"), `"output":"out\n"`},
		{Remote("127.0.0.1:4242"), `"remote":"127.0.0.1:4242"`},
		{Client("mongod"), `"client":"mongod"`},
		{ObjectID("0f"), `"object_id":"0f"`},
		{Result("ok"), `"result":"ok"`},
		{Err(errors.New("boom")), `"err":"boom"`},
	} {
		var buf bytes.Buffer
		Info(jsonLogger(&buf, false), "m", Stop, tc.f)
		want := `{"level":"INFO","msg":"m","event":"audit","action":"stop",` + tc.want + "}\n"
		if buf.String() != want {
			t.Errorf("got %s want %s", buf.String(), want)
		}
	}
}

func TestLevelsAndSource(t *testing.T) {
	var buf bytes.Buffer
	l := jsonLogger(&buf, true)
	Log(l, slog.LevelError, "e", Refuse)
	Error(l, "e", Refuse)
	Warn(l, "w", Refuse)
	Info(l, "i", Refuse)
	var levels []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec struct {
			Level  string
			Event  string
			Action string
			Source struct{ File string }
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Event != "audit" || rec.Action != "refuse" {
			t.Errorf("event %q action %q in %s", rec.Event, rec.Action, line)
		}
		// The source is the caller, not this package's helper.
		if filepath.Base(rec.Source.File) != "audit_test.go" {
			t.Errorf("source %s, want the caller", rec.Source.File)
		}
		levels = append(levels, rec.Level)
	}
	if got := strings.Join(levels, " "); got != "ERROR ERROR WARN INFO" {
		t.Errorf("levels %s", got)
	}

	buf.Reset()
	quiet := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	Info(quiet, "i", Stop)
	if buf.Len() != 0 {
		t.Errorf("a record below the logger's level was written: %s", buf.String())
	}
}
