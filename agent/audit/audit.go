// SPDX-License-Identifier: Apache-2.0

// Package audit writes byokd's audit records: log records with
// event=audit, an action from a fixed list and fields with fixed keys, so
// that operators and tests can select and parse them, and a call site can
// neither misspell a key nor invent an action.
package audit

import (
	"context"
	"log/slog"
	"runtime"
	"time"
)

// Action says what an audit record is about; it is logged as "action".
type Action string

// The actions byokd audits.
const (
	// Transition: the node's state changed (from, state, reason, cause).
	Transition Action = "transition"
	// Refuse: a caller of the socket was refused.
	Refuse Action = "refuse"
	// LockAction: an operator's [[lock_action]] command ran.
	LockAction Action = "lock_action"
	// UnlockAction: an operator's [[unlock_action]] command ran.
	UnlockAction Action = "unlock_action"
	// Stop: byokd stopped.
	Stop Action = "stop"
	// Wipe: keys that could not be wiped when the node locked were wiped.
	Wipe Action = "wipe"
	// Provision: a new data key was created and its wrapped key stored.
	Provision Action = "provision"
	// RecordIdentity: the node recorded which data key it serves.
	RecordIdentity Action = "record-identity"
	// Unlock: the data key was unwrapped and sealed.
	Unlock Action = "unlock"
	// Rotation: the key re-wrapped under a rotated root key was stored.
	Rotation Action = "rotation"
	// RestoreWrappedKey: a missing wrapped key file was written back from
	// the wrapped key the node holds.
	RestoreWrappedKey Action = "restore-wrapped-key"
	// AcceptKey: an operator made the node serve another data key.
	AcceptKey Action = "accept-key"
	// ForgetKey: an operator gave up the node's data key.
	ForgetKey Action = "forget-key"
	// KMIP: a KMIP client changed an object (register, create, activate,
	// revoke, destroy).
	KMIP Action = "kmip"
	// KMIPRefuse: a KMIP connection was refused (TLS, client certificate,
	// malformed message).
	KMIPRefuse Action = "kmip-refuse"

	// The locks only an operator or a changed file clears; each is also
	// the lock's cause.

	// WrappedKeyRefused: the root key refused the wrapped key file.
	WrappedKeyRefused Action = "wrapped-key-refused"
	// WrappedKeyMissing: the wrapped key file is gone and the node holds
	// no copy of it.
	WrappedKeyMissing Action = "wrapped-key-missing"
	// KeyChanged: the wrapped key file unwraps to another key than the
	// one the node recorded.
	KeyChanged Action = "key-changed"
)

// A Field is one key and value of an audit record, made by the functions
// below.
type Field struct{ attr slog.Attr }

func str(key, v string) Field { return Field{slog.String(key, v)} }

// id is a user, group or process id as the kernel or a caller gives it.
type id interface{ ~int | ~int32 | ~uint32 }

// Record fields.
func Reason(v string) Field             { return str("reason", v) }
func Cause(v string) Field              { return str("cause", v) }
func From(v string) Field               { return str("from", v) }
func To(v string) Field                 { return str("to", v) }
func State(v string) Field              { return str("state", v) }
func RootKeyID(v string) Field          { return str("root_key_id", v) }
func KeyVersion(v string) Field         { return str("key_version", v) }
func PreviousVersion(v string) Field    { return str("previous_version", v) }
func Fingerprint(v string) Field        { return str("fingerprint", v) }
func WrappedFingerprint(v string) Field { return str("wrapped_fingerprint", v) }
func Generation(v uint32) Field         { return Field{slog.Any("generation", v)} }
func FromGeneration(v uint32) Field     { return Field{slog.Any("from_generation", v)} }
func ToGeneration(v uint32) Field       { return Field{slog.Any("to_generation", v)} }
func Path(v string) Field               { return str("path", v) }
func KeptAs(v string) Field             { return str("kept_as", v) }
func Op(v string) Field                 { return str("op", v) }
func OperatorAction(v string) Field     { return str("operator_action", v) }
func WipeError(v string) Field          { return str("wipe_error", v) }
func Method(v string) Field             { return str("method", v) }
func UID[T id](v T) Field               { return Field{slog.Any("uid", v)} }
func GID[T id](v T) Field               { return Field{slog.Any("gid", v)} }
func PID[T id](v T) Field               { return Field{slog.Any("pid", v)} }
func Groups(v []uint32) Field           { return Field{slog.Any("groups", v)} }
func Command(v []string) Field          { return Field{slog.Any("command", v)} }
func Duration(v time.Duration) Field    { return Field{slog.Duration("duration", v)} }
func Timeout(v time.Duration) Field     { return Field{slog.Duration("timeout", v)} }
func Output(v string) Field             { return str("output", v) }
func Remote(v string) Field             { return str("remote", v) }
func Client(v string) Field             { return str("client", v) }
func ObjectID(v string) Field           { return str("object_id", v) }
func Result(v string) Field             { return str("result", v) }
func Err(err error) Field               { return Field{slog.Any("err", err)} }

// Log writes an audit record to l at level: msg, event=audit, action, then
// the fields in order.
func Log(l *slog.Logger, level slog.Level, msg string, action Action, fields ...Field) {
	write(l, level, msg, action, fields)
}

// Info writes an audit record at level Info.
func Info(l *slog.Logger, msg string, action Action, fields ...Field) {
	write(l, slog.LevelInfo, msg, action, fields)
}

// Warn writes an audit record at level Warn.
func Warn(l *slog.Logger, msg string, action Action, fields ...Field) {
	write(l, slog.LevelWarn, msg, action, fields)
}

// Error writes an audit record at level Error.
func Error(l *slog.Logger, msg string, action Action, fields ...Field) {
	write(l, slog.LevelError, msg, action, fields)
}

// write is called by the exported functions only, so that the record's
// source is their caller, as if it had called l.Info itself.
func write(l *slog.Logger, level slog.Level, msg string, action Action, fields []Field) {
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // runtime.Callers, write, Log/Info/Warn/Error
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	r.AddAttrs(slog.String("event", "audit"), slog.String("action", string(action)))
	for _, f := range fields {
		r.AddAttrs(f.attr)
	}
	_ = l.Handler().Handle(ctx, r)
}
