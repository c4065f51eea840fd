// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/IBM/keyprotect-go-client/iam"
)

// These tests drive the emulator through the real keyprotect-go-client.

func TestUnknownAPIKeyGetsIAMError(t *testing.T) {
	e := newEnv(t)
	c := e.client(func(cc *kp.ClientConfig) { cc.APIKey = "not-a-known-key" })
	_, err := c.GetKeys(ctx(t), 0, 0)
	var ierr iam.Error
	if !errors.As(err, &ierr) {
		t.Fatalf("want iam.Error, got %T %v", err, err)
	}
	if ierr.ErrorCode != "BXNIM0415E" || ierr.HTTPResponse.StatusCode != 400 || ierr.Context == nil || ierr.Context.RequestID == "" {
		t.Fatalf("unexpected IAM error: %+v", ierr)
	}
}

func TestCreateRootStandardAndImportedKeys(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if root.Extractable || root.State != int(kp.Active) || root.Imported || root.KeyVersion == nil || root.CRN == "" || root.Type != typeKey {
		t.Fatalf("root key: %+v", root)
	}
	std, err := c.CreateStandardKey(ctx(t), "std-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	imp, err := c.CreateImportedRootKey(ctx(t), "imported-root", nil, payload, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !imp.Imported || imp.Extractable {
		t.Fatalf("imported root key: %+v", imp)
	}
	impStd, err := c.CreateImportedStandardKey(ctx(t), "imported-std", nil, base64.StdEncoding.EncodeToString([]byte("a standard secret")))
	if err != nil {
		t.Fatal(err)
	}

	got, err := c.GetKey(ctx(t), root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Payload != "" {
		t.Fatal("a root key's material left the emulator")
	}
	got, err = c.GetKey(ctx(t), std.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := base64.StdEncoding.DecodeString(got.Payload); len(p) != 32 {
		t.Fatalf("standard key payload: %q", got.Payload)
	}
	got, err = c.GetKey(ctx(t), impStd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := base64.StdEncoding.DecodeString(got.Payload); string(p) != "a standard secret" {
		t.Fatalf("imported standard payload: %q", got.Payload)
	}
	md, err := c.GetKeyMetadata(ctx(t), std.ID)
	if err != nil {
		t.Fatal(err)
	}
	if md.Payload != "" || md.Name != "std-1" {
		t.Fatalf("metadata: %+v", md)
	}

	// Bad payloads are refused as the service refuses them.
	_, err = c.CreateImportedRootKey(ctx(t), "short", nil, base64.StdEncoding.EncodeToString([]byte("short")), "", "")
	wantKPError(t, err, 400, "INVALID_FIELD_ERR")
	_, err = c.CreateKey(ctx(t), "x", nil, false)
	wantKPError(t, err, 400, "INVALID_FIELD_ERR")
	past := time.Now().Add(-time.Hour)
	_, err = c.CreateRootKey(ctx(t), "expired-at-birth", &past)
	wantKPError(t, err, 400, "INVALID_FIELD_ERR")
	_, err = c.GetKey(ctx(t), "6a0b1b1e-0000-4000-8000-000000000000")
	wantKPError(t, err, 404, "KEY_NOT_FOUND_ERR")
}

func TestListKeysFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var ids []string
	for i := range 5 {
		k, err := c.CreateKey(ctx(t), "key-"+string(rune('a'+i)), nil, i%2 == 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	if err := c.DisableKey(ctx(t), ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteKey(ctx(t), ids[2], kp.ReturnMinimal); err != nil {
		t.Fatal(err)
	}
	all, err := c.ListKeys(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Keys) != 4 || all.Metadata.NumberOfKeys != 4 {
		t.Fatalf("default list hides destroyed keys: got %d", len(all.Keys))
	}
	lim, off := uint32(2), uint32(1)
	page, err := c.ListKeys(ctx(t), &kp.ListKeysOptions{Limit: &lim, Offset: &off})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Keys) != 2 || page.Keys[0].ID != all.Keys[1].ID {
		t.Fatalf("page: %+v", page.Keys)
	}
	ext := true
	std, err := c.ListKeys(ctx(t), &kp.ListKeysOptions{Extractable: &ext})
	if err != nil {
		t.Fatal(err)
	}
	if len(std.Keys) != 2 {
		t.Fatalf("extractable filter: %d", len(std.Keys))
	}
	gone, err := c.ListKeys(ctx(t), &kp.ListKeysOptions{State: []kp.KeyState{kp.Destroyed, kp.Suspended}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range gone.Keys {
		got = append(got, k.ID)
	}
	if len(got) != 2 || !slices.Contains(got, ids[0]) || !slices.Contains(got, ids[2]) {
		t.Fatalf("state filter: %v", got)
	}

	status, _, body := e.raw("GET", "/api/v2/keys?totalCount=true&limit=1", nil)
	if status != 200 || !bytes.Contains(body, []byte(`"totalCount":4`)) || !bytes.Contains(body, []byte(`"collectionTotal":1`)) {
		t.Fatalf("totalCount: %d %s", status, body)
	}
	status, hdr, _ := e.raw("HEAD", "/api/v2/keys?extractable=true", nil)
	if status != 200 || hdr.Get("Key-Total") != "2" {
		t.Fatalf("HEAD Key-Total: %d %q", status, hdr.Get("Key-Total"))
	}
	status, _, body = e.raw("GET", "/api/v2/keys?state=0", nil)
	if status != 200 || bytes.Contains(body, []byte("resources")) {
		t.Fatalf("an empty list leaves resources out: %s", body)
	}
	status, _, body = e.raw("GET", "/api/v2/keys?limit=0", nil)
	wantShape(t, status, body, 400, "INVALID_QUERY_PARAM_ERR")
	status, _, body = e.raw("GET", "/api/v2/keys?state=4", nil)
	wantShape(t, status, body, 400, "INVALID_QUERY_PARAM_ERR")
}

func TestWrapUnwrapBindsAAD(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	aad := []string{"byokd", "cluster:c1"}
	dek := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	ct, err := c.Wrap(ctx(t), root.ID, []byte(dek), &aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte(dek)) {
		t.Fatal("ciphertext carries the plaintext")
	}
	pt, rewrapped, err := c.UnwrapV2(ctx(t), root.ID, ct, &aad)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != dek || len(rewrapped) != 0 {
		t.Fatalf("unwrap: %q rewrapped=%q", pt, rewrapped)
	}

	for name, bad := range map[string]*[]string{
		"no AAD":         nil,
		"other AAD":      {"byokd", "cluster:c2"},
		"AAD reordered":  {"cluster:c1", "byokd"},
		"AAD concat":     {"byokdcluster:c1"},
		"AAD extra item": {"byokd", "cluster:c1", ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Unwrap(ctx(t), root.ID, ct, bad)
			wantBadCiphertext(t, err)
		})
	}

	// The same ciphertext does not unwrap under another root key.
	other, err := c.CreateRootKey(ctx(t), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Unwrap(ctx(t), other.ID, ct, &aad)
	wantBadCiphertext(t, err)

	// A tampered ciphertext fails rather than unwrapping to garbage.
	env, ctRaw, iv, perr := parseEnvelope(string(ct))
	if perr != nil {
		t.Fatal(perr)
	}
	ctRaw[0] ^= 1
	env.Ciphertext = base64.StdEncoding.EncodeToString(ctRaw)
	env.IV = base64.StdEncoding.EncodeToString(iv)
	tampered := reEnvelope(t, env)
	_, err = c.Unwrap(ctx(t), root.ID, tampered, &aad)
	wantBadCiphertext(t, err)
	_, err = c.Unwrap(ctx(t), root.ID, []byte("bm90IGEgY2lwaGVydGV4dA=="), &aad)
	wantBadCiphertext(t, err)

	// Rewrap answers the same for the same mistakes.
	for name, body := range map[string]string{
		"wrong AAD":          `{"ciphertext":"` + string(ct) + `","aad":["byokd"]}`,
		"tampered":           `{"ciphertext":"` + string(tampered) + `","aad":["byokd","cluster:c1"]}`,
		"not an envelope":    `{"ciphertext":"bm90IGEgY2lwaGVydGV4dA=="}`,
		"another key's wrap": `{"ciphertext":"` + string(ct) + `","aad":["byokd","cluster:c1"]}`,
	} {
		keyID := root.ID
		if name == "another key's wrap" {
			keyID = other.ID
		}
		status, _, body := e.raw("POST", "/api/v2/keys/"+keyID+"/actions/rewrap", []byte(body))
		wantShape(t, status, body, 400, "INVALID_FIELD_ERR")
		if !bytes.Contains(body, []byte(ciphertextReason)) || !bytes.Contains(body, []byte(`"target":{"type":"field","name":"ciphertext"}`)) {
			t.Fatalf("rewrap %s: %s", name, body)
		}
	}
}

// ciphertextReason is the service's reason for a ciphertext that does not
// unwrap (error-messages.md, "Invalid field error").
const ciphertextReason = "The field `ciphertext` must be: the original base64 encoded ciphertext from the wrap operation"

// wantBadCiphertext checks the service's answer to a ciphertext that does not
// unwrap: 400 INVALID_FIELD_ERR aimed at the ciphertext field, never 422.
func wantBadCiphertext(t *testing.T, err error) {
	t.Helper()
	kerr := wantKPError(t, err, 400, "INVALID_FIELD_ERR")
	if kerr.Reasons[0].Message != ciphertextReason {
		t.Fatalf("reason %q, want %q", kerr.Reasons[0].Message, ciphertextReason)
	}
	if !bytes.Contains(kerr.BodyContent, []byte(`"target":{"type":"field","name":"ciphertext"}`)) {
		t.Fatalf("no ciphertext target: %s", kerr.BodyContent)
	}
}

func TestWrapWithoutPlaintextCreatesDEK(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.WrapCreateDEKV2(ctx(t), root.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	dek, err := base64.StdEncoding.DecodeString(res.PlainText)
	if err != nil || len(dek) != 32 {
		t.Fatalf("generated DEK: %d bytes, %v", len(dek), err)
	}
	if res.KeyVersion == nil || res.KeyVersion.ID != root.KeyVersion.ID {
		t.Fatalf("key version: %+v", res.KeyVersion)
	}
	pt, err := c.Unwrap(ctx(t), root.ID, []byte(res.CipherText), nil)
	if err != nil || string(pt) != res.PlainText {
		t.Fatalf("unwrap generated DEK: %v", err)
	}
	again, err := c.WrapCreateDEKV2(ctx(t), root.ID, nil)
	if err != nil || again.PlainText == res.PlainText {
		t.Fatalf("two generated DEKs are equal or failed: %v", err)
	}
}

func TestDisabledKeyRefusesWrapAndUnwrapUntilEnabled(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Wrap(ctx(t), root.ID, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DisableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.State != int(kp.Suspended) {
		t.Fatalf("state after disable: %+v %v", md, err)
	}
	_, err = c.Unwrap(ctx(t), root.ID, ct, nil)
	kerr := wantKPError(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")
	if want := "Conflict: Unwrap with key could not be performed: Please see `reasons` for more details (KEY_ACTION_INVALID_STATE_ERR)"; kerr.Message != want {
		t.Fatalf("errorMsg %q, want %q", kerr.Message, want)
	}
	_, err = c.Wrap(ctx(t), root.ID, nil, nil)
	wantKPError(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")
	wantKPError(t, c.DisableKey(ctx(t), root.ID), 409, "KEY_ACTION_INVALID_STATE_ERR")

	// The service makes a caller wait 30 seconds after a state change.
	wantKPError(t, c.EnableKey(ctx(t), root.ID), 409, "REQ_TOO_EARLY_ERR")
	e.srv.AdvanceClock(31 * time.Second)
	if err := c.EnableKey(ctx(t), root.ID); err != nil {
		t.Fatal(err)
	}
	wantKPError(t, c.EnableKey(ctx(t), root.ID), 409, "KEY_ACTION_INVALID_STATE_ERR")
	if _, err := c.Unwrap(ctx(t), root.ID, ct, nil); err != nil {
		t.Fatalf("unwrap after enable: %v", err)
	}
}

func TestDeletedKeyIsGoneUntilRestoredAndPurgedAfterFourHours(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Wrap(ctx(t), root.ID, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), nil)
	if err != nil {
		t.Fatal(err)
	}
	del, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnRepresentation)
	if err != nil {
		t.Fatal(err)
	}
	if del == nil || del.State != int(kp.Destroyed) || del.Deleted == nil || !*del.Deleted || del.DeletionDate == nil || del.PurgeAllowedFrom == nil {
		t.Fatalf("delete representation: %+v", del)
	}
	_, err = c.Unwrap(ctx(t), root.ID, ct, nil)
	wantKPError(t, err, 410, "KEY_DELETED_ERR")
	_, err = c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 410, "KEY_DELETED_ERR")
	got, err := c.GetKey(ctx(t), root.ID)
	if err != nil || got.State != int(kp.Destroyed) || got.Payload != "" {
		t.Fatalf("a deleted key still answers, with state 5: %+v %v", got, err)
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.State != int(kp.Destroyed) || md.Deleted == nil || !*md.Deleted || md.DeletionDate == nil {
		t.Fatalf("metadata of a deleted key (state 5, deleted: true, deletionDate): %+v %v", md, err)
	}
	if got.Deleted == nil || !*got.Deleted {
		t.Fatalf("GET of a deleted key without deleted: true: %+v", got)
	}
	_, err = c.PurgeKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "REQ_TOO_EARLY_ERR")

	_, err = c.RestoreKey(ctx(t), root.ID)
	wantKPError(t, err, 409, "REQ_TOO_EARLY_ERR")
	e.srv.AdvanceClock(time.Minute)
	restored, err := c.RestoreKey(ctx(t), root.ID)
	if err != nil || restored.State != int(kp.Active) {
		t.Fatalf("restore: %+v %v", restored, err)
	}
	if _, err := c.Unwrap(ctx(t), root.ID, ct, nil); err != nil {
		t.Fatalf("unwrap after restore: %v", err)
	}
	_, err = c.RestoreKey(ctx(t), root.ID)
	wantKPError(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")
	_, err = c.PurgeKey(ctx(t), root.ID, kp.ReturnMinimal)
	wantKPError(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")

	if _, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(4*time.Hour + time.Second)
	purged, err := c.PurgeKey(ctx(t), root.ID, kp.ReturnRepresentation)
	if err != nil || purged == nil || purged.ID != root.ID {
		t.Fatalf("purge: %+v %v", purged, err)
	}
	_, err = c.GetKeyMetadata(ctx(t), root.ID)
	wantKPError(t, err, 404, "KEY_NOT_FOUND_ERR")

	// Restoring is possible for 30 days only.
	k2, err := c.CreateRootKey(ctx(t), "root2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteKey(ctx(t), k2.ID, kp.ReturnMinimal); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(31 * 24 * time.Hour)
	_, err = c.RestoreKey(ctx(t), k2.ID)
	wantKPError(t, err, 400, "KEY_RESTORE_EXPIRED")
}

func TestRotationRewrapsOldCiphertextOnUnwrap(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	aad := []string{"byokd"}
	dek := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1, 2, 3, 4}, 8))
	oldCT, err := c.Wrap(ctx(t), root.ID, []byte(dek), &aad)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rotate(ctx(t), root.ID, ""); err != nil {
		t.Fatal(err)
	}
	wantKPError(t, c.Rotate(ctx(t), root.ID, ""), 409, "KEY_ROTATION_NOT_PERMITTED")

	pt, rewrapped, err := c.UnwrapV2(ctx(t), root.ID, oldCT, &aad)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != dek || len(rewrapped) == 0 || bytes.Equal(rewrapped, oldCT) {
		t.Fatalf("unwrap of an old ciphertext: pt ok=%v rewrapped=%d bytes", string(pt) == dek, len(rewrapped))
	}
	pt2, again, err := c.UnwrapV2(ctx(t), root.ID, rewrapped, &aad)
	if err != nil || string(pt2) != dek || len(again) != 0 {
		t.Fatalf("unwrap of the rewrapped ciphertext: %v again=%d", err, len(again))
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.LastRotateDate == nil || md.KeyVersion.ID == root.KeyVersion.ID {
		t.Fatalf("metadata after rotation: %+v %v", md, err)
	}
	vs, err := c.ListKeyVersions(ctx(t), root.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.KeyVersion) != 2 || vs.KeyVersion[0].ID != md.KeyVersion.ID || vs.KeyVersion[1].ID != root.KeyVersion.ID {
		t.Fatalf("versions: %+v", vs.KeyVersion)
	}
	one, tot := uint32(1), true
	vs, err = c.ListKeyVersions(ctx(t), root.ID, &kp.ListKeyVersionsOptions{Limit: &one, TotalCount: &tot})
	if err != nil || len(vs.KeyVersion) != 1 || vs.Metadata.TotalCount == nil || *vs.Metadata.TotalCount != 2 {
		t.Fatalf("versions page: %+v %v", vs, err)
	}

	// A rotation an hour later is allowed again; an imported key needs new material.
	e.srv.AdvanceClock(time.Hour)
	if err := c.Rotate(ctx(t), root.ID, ""); err != nil {
		t.Fatal(err)
	}
	imp, err := c.CreateImportedRootKey(ctx(t), "imp", nil, base64.StdEncoding.EncodeToString(make([]byte, 32)), "", "")
	if err != nil {
		t.Fatal(err)
	}
	wantKPError(t, c.Rotate(ctx(t), imp.ID, ""), 400, "KEY_PAYLOAD_REQ_ERR")
	if err := c.Rotate(ctx(t), imp.ID, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))); err != nil {
		t.Fatal(err)
	}

	// The raw rewrap action moves a ciphertext to the newest version.
	status, _, body := e.raw("POST", "/api/v2/keys/"+root.ID+"/actions/rewrap",
		[]byte(`{"ciphertext":"`+string(oldCT)+`","aad":["byokd"]}`))
	if status != 200 || !bytes.Contains(body, []byte(`"rewrappedKeyVersion"`)) || !bytes.Contains(body, []byte(`"ciphertext"`)) {
		t.Fatalf("rewrap: %d %s", status, body)
	}
}

func TestExpiredKeyIsDeactivatedAndStillUnwraps(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	exp := time.Now().Add(time.Hour)
	root, err := c.CreateRootKey(ctx(t), "expiring", &exp)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := c.Wrap(ctx(t), root.ID, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(2 * time.Hour)
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.State != int(kp.Deactivated) {
		t.Fatalf("state after expiry: %+v %v", md, err)
	}
	if _, err := c.Unwrap(ctx(t), root.ID, ct, nil); err != nil {
		t.Fatalf("an expired key still unwraps (key-states page): %v", err)
	}
	_, err = c.Wrap(ctx(t), root.ID, nil, nil)
	wantKPError(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")
	wantKPError(t, c.EnableKey(ctx(t), root.ID), 409, "KEY_ACTION_INVALID_STATE_ERR")
	wantKPError(t, c.DisableKey(ctx(t), root.ID), 409, "KEY_ACTION_INVALID_STATE_ERR")
	if err := c.Rotate(ctx(t), root.ID, ""); err != nil {
		t.Fatalf("rotate is allowed on a deactivated key: %v", err)
	}
	if _, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal); err != nil {
		t.Fatalf("delete is allowed on a deactivated key: %v", err)
	}
}

func TestStandardKeyCannotWrap(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	std, err := c.CreateStandardKey(ctx(t), "std", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Wrap(ctx(t), std.ID, nil, nil)
	wantKPError(t, err, 400, "KEY_ROOT_REQ_ERR")
	_, err = c.Unwrap(ctx(t), std.ID, []byte("eA=="), nil)
	wantKPError(t, err, 400, "KEY_ROOT_REQ_ERR")
	wantKPError(t, c.DisableKey(ctx(t), std.ID), 400, "KEY_ROOT_REQ_ERR")
	wantKPError(t, c.Rotate(ctx(t), std.ID, ""), 400, "KEY_ROOT_REQ_ERR")
}

func TestAliasesWorkWhereverAnIDDoes(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateKeyWithAliases(ctx(t), "root", nil, false, []string{"first-alias"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(root.Aliases, []string{"first-alias"}) {
		t.Fatalf("aliases at create: %v", root.Aliases)
	}
	a, err := c.CreateKeyAlias(ctx(t), "db-root", root.ID)
	if err != nil || a.KeyID != root.ID || a.Alias != "db-root" {
		t.Fatalf("create alias: %+v %v", a, err)
	}
	ct, err := c.Wrap(ctx(t), "db-root", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Unwrap(ctx(t), "first-alias", ct, nil); err != nil {
		t.Fatalf("unwrap by alias: %v", err)
	}
	md, err := c.GetKeyMetadata(ctx(t), "db-root")
	if err != nil || md.ID != root.ID || len(md.Aliases) != 2 {
		t.Fatalf("metadata by alias: %+v %v", md, err)
	}
	if err := c.DisableKey(ctx(t), "db-root"); err != nil {
		t.Fatal(err)
	}

	other, err := c.CreateRootKey(ctx(t), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateKeyAlias(ctx(t), "db-root", other.ID)
	wantKPError(t, err, 409, "KEY_ALIAS_NOT_UNIQUE_ERR")
	for _, bad := range []string{"x", "has space", "keys", "6a0b1b1e-0000-4000-8000-000000000000"} {
		_, err = c.CreateKeyAlias(ctx(t), bad, other.ID)
		if bad == "has space" {
			// The client puts the alias in the path unescaped; the request
			// never reaches a handler as an alias.
			if err == nil {
				t.Fatalf("alias %q accepted", bad)
			}
			continue
		}
		wantKPError(t, err, 400, "INVALID_FIELD_ERR")
	}
	for i := range 5 {
		if _, err := c.CreateKeyAlias(ctx(t), "o-"+string(rune('a'+i)), other.ID); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.CreateKeyAlias(ctx(t), "o-six", other.ID)
	wantKPError(t, err, 400, "KEY_ALIAS_QUOTA_ERR")

	if err := c.DeleteKeyAlias(ctx(t), "db-root", root.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetKeyMetadata(ctx(t), "db-root")
	wantKPError(t, err, 404, "KEY_NOT_FOUND_ERR")
	wantKPError(t, c.DeleteKeyAlias(ctx(t), "db-root", root.ID), 404, "KEY_ALIAS_NOT_FOUND_ERR")
}

func TestExpiredTokenGets401(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TokenTTL = 2 * time.Second })
	tok := e.token()
	c := e.client(func(cc *kp.ClientConfig) { cc.Authorization = "Bearer " + tok })
	if _, err := c.GetKeys(ctx(t), 0, 0); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	time.Sleep(2100 * time.Millisecond)
	_, err := c.GetKeys(ctx(t), 0, 0)
	kerr := wantKPError(t, err, 401, "")
	if kerr.Message != msgUnauthorized {
		t.Fatalf("errorMsg %q", kerr.Message)
	}
	// A client holding the API key simply gets a new token.
	if _, err := e.client().GetKeys(ctx(t), 0, 0); err != nil {
		t.Fatalf("new token: %v", err)
	}
	bad := e.client(func(cc *kp.ClientConfig) { cc.Authorization = "Bearer not.a.token" })
	_, err = bad.GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 401, "")
	malformed := e.client(func(cc *kp.ClientConfig) { cc.Authorization = "Basic abc" })
	_, err = malformed.GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 400, "BEARER_SUB_EXTRACTION_ERR")
}

func TestWrongInstanceIsRefused(t *testing.T) {
	e := newEnv(t)
	other := e.client(func(cc *kp.ClientConfig) { cc.InstanceID = "0b6e1f3a-1111-4222-8333-444455556666" })
	_, err := other.GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 401, "")
	garbled := e.client(func(cc *kp.ClientConfig) { cc.InstanceID = "not-a-uuid" })
	_, err = garbled.GetKeys(ctx(t), 0, 0)
	kerr := wantKPError(t, err, 400, "")
	if kerr.Message != "Bad Request: Request requires valid Bluemix-Instance Header containing a valid UUID" {
		t.Fatalf("errorMsg %q", kerr.Message)
	}
	missing := e.client(func(cc *kp.ClientConfig) { cc.InstanceID = "" })
	_, err = missing.GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 400, "")
}

func TestRevokedAccessGets401AndRemovedKeyGetsIAMError(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	if _, err := c.GetKeys(ctx(t), 0, 0); err != nil {
		t.Fatal(err)
	}
	e.srv.SetAPIKey(testAPIKey, true, false)
	_, err := c.GetKeys(ctx(t), 0, 0)
	wantKPError(t, err, 401, "")
	e.srv.SetAPIKey(testAPIKey, false, false)
	if _, err := c.GetKeys(ctx(t), 0, 0); err != nil {
		t.Fatalf("access given back: %v", err)
	}
	e.srv.SetAPIKey(testAPIKey, false, true)
	_, err = e.client().GetKeys(ctx(t), 0, 0)
	var ierr iam.Error
	if !errors.As(err, &ierr) || ierr.ErrorCode != "BXNIM0415E" {
		t.Fatalf("removed API key: %v", err)
	}
}

const (
	testCRN1 = "crn:v1:bluemix:public:cloud-object-storage:global:a/0123456789abcdef:0b6e1f3a-1111-4222-8333-444455556666:bucket:prod-logs"
	testCRN2 = "crn:v1:bluemix:public:cloud-object-storage:global:a/0123456789abcdef:0b6e1f3a-1111-4222-8333-444455556666:bucket:test-data"
	testCRN3 = "crn:v1:bluemix:public:databases-for-redis:us-south:a/0123456789abcdef:29caf0e7-120f-4da8-9551-3abf57ebcfc7::"
)

func TestRegistrationsAreListedAndProtectKeysFromDeletion(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateRootKey(ctx(t), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := c.ListRegistrations(ctx(t), root.ID, "")
	if err != nil || len(regs.Registrations) != 0 || regs.Metadata.CollectionType != typeRegistration {
		t.Fatalf("no registrations yet: %+v %v", regs, err)
	}

	if err := e.srv.AddRegistration(root.ID, testCRN1, false); err != nil {
		t.Fatal(err)
	}
	e.srv.AdvanceClock(time.Second)
	if st, b := adminDo(t, e, "POST", "/_kpemu/registrations", `{"keyId":"`+root.ID+`","crn":"`+testCRN2+`"}`); st != 200 {
		t.Fatalf("admin registration: %d %s", st, b)
	}
	if err := e.srv.AddRegistration(other.ID, testCRN3, true); err != nil {
		t.Fatal(err)
	}
	std, err := c.CreateStandardKey(ctx(t), "std", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"standard key": `{"keyId":"` + std.ID + `","crn":"` + testCRN1 + `"}`,
		"not a CRN":    `{"keyId":"` + root.ID + `","crn":"bucket"}`,
		"unknown":      `{"keyId":"6a0b1b1e-0000-4000-8000-000000000000","crn":"` + testCRN1 + `"}`,
	} {
		want := 400
		if name == "unknown" {
			want = 404
		}
		if st, b := adminDo(t, e, "POST", "/_kpemu/registrations", body); st != want {
			t.Fatalf("%s: %d %s", name, st, b)
		}
	}

	regs, err = c.ListRegistrations(ctx(t), root.ID, "")
	if err != nil || len(regs.Registrations) != 2 || regs.Metadata.NumberOfKeys != 2 {
		t.Fatalf("registrations of root: %+v %v", regs, err)
	}
	r0 := regs.Registrations[0]
	if r0.KeyID != root.ID || r0.ResourceCrn != testCRN1 || r0.PreventKeyDeletion || r0.CreationDate == nil || r0.LastUpdateDate == nil ||
		r0.KeyVersion.ID != root.KeyVersion.ID || r0.CreatedBy == "" || regs.Registrations[1].ResourceCrn != testCRN2 {
		t.Fatalf("registration: %+v", regs.Registrations)
	}
	all, err := c.ListRegistrations(ctx(t), "", "")
	if err != nil || len(all.Registrations) != 3 {
		t.Fatalf("all registrations: %+v %v", all, err)
	}
	byCRN, err := c.ListRegistrations(ctx(t), "", testCRN3)
	if err != nil || len(byCRN.Registrations) != 1 || byCRN.Registrations[0].KeyID != other.ID || !byCRN.Registrations[0].PreventKeyDeletion {
		t.Fatalf("by CRN: %+v %v", byCRN, err)
	}
	prefix := strings.TrimSuffix(testCRN1, "prod-logs") + "prod*"
	if got, err := c.ListRegistrations(ctx(t), "", prefix); err != nil || len(got.Registrations) != 1 || got.Registrations[0].ResourceCrn != testCRN1 {
		t.Fatalf("CRN query with a prefix: %+v %v", got, err)
	}
	status, _, body := e.raw("GET", "/api/v2/keys/registrations?preventKeyDeletion=true&limit=5", nil)
	if status != 200 || bytes.Count(body, []byte(`"keyId"`)) != 1 || !bytes.Contains(body, []byte(testCRN3)) {
		t.Fatalf("preventKeyDeletion filter: %d %s", status, body)
	}
	status, _, body = e.raw("GET", "/api/v2/keys/registrations?offset=1&limit=1", nil)
	if status != 200 || bytes.Count(body, []byte(`"keyId"`)) != 1 {
		t.Fatalf("paging: %d %s", status, body)
	}
	_, err = c.ListRegistrations(ctx(t), "6a0b1b1e-0000-4000-8000-000000000000", "")
	wantKPError(t, err, 404, "KEY_NOT_FOUND_ERR")

	// A key protecting resources is deleted only with force.
	_, err = c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	kerr := wantKPError(t, err, 409, "PROTECTED_RESOURCE_ERR")
	if kerr.Reasons[0].Message != "Key is protecting one or more cloud resources" {
		t.Fatalf("reason %q", kerr.Reasons[0].Message)
	}
	if _, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal, kp.ForceOpt{Force: true}); err != nil {
		t.Fatalf("force delete: %v", err)
	}
	if regs, err := c.ListRegistrations(ctx(t), root.ID, ""); err != nil || len(regs.Registrations) != 2 {
		t.Fatalf("a deleted key's registrations are still listed: %+v %v", regs, err)
	}

	// A resource under a retention policy blocks the delete even with force.
	_, err = c.DeleteKey(ctx(t), other.ID, kp.ReturnMinimal, kp.ForceOpt{Force: true})
	kerr = wantKPError(t, err, 409, "PREV_KEY_DEL_ERR")
	if !strings.HasPrefix(kerr.Reasons[0].Message, "The key cannot be deleted because it's protecting a cloud resource that has a retention policy") {
		t.Fatalf("reason %q", kerr.Reasons[0].Message)
	}
	if st, b := adminDo(t, e, "DELETE", "/_kpemu/registrations", `{"keyId":"`+other.ID+`","crn":"`+testCRN3+`"}`); st != 200 {
		t.Fatalf("remove registration: %d %s", st, b)
	}
	if st, _ := adminDo(t, e, "DELETE", "/_kpemu/registrations", `{"keyId":"`+other.ID+`","crn":"`+testCRN3+`"}`); st != 400 {
		t.Fatal("removing a registration twice succeeded")
	}
	if _, err := c.DeleteKey(ctx(t), other.ID, kp.ReturnMinimal); err != nil {
		t.Fatalf("delete after the registration is gone: %v", err)
	}
}

func TestDeleteAnswersMinimalOrRepresentation(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal)
	if err != nil || k != nil {
		t.Fatalf("minimal delete returned %+v %v", k, err)
	}
	status, _, _ := e.raw(http.MethodDelete, "/api/v2/keys/"+root.ID, nil)
	if status != 410 {
		t.Fatalf("second delete: %d", status)
	}
}

func TestKeyRingHeader(t *testing.T) {
	e := newEnv(t)
	ringed := e.client(func(cc *kp.ClientConfig) { cc.KeyRing = "ring-a" })
	k, err := ringed.CreateRootKey(ctx(t), "root", nil)
	if err != nil || k.KeyRingID != "ring-a" {
		t.Fatalf("create in ring: %+v %v", k, err)
	}
	if _, err := ringed.GetKeyMetadata(ctx(t), k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client().GetKeyMetadata(ctx(t), k.ID); err != nil {
		t.Fatalf("without the header the key is looked up: %v", err)
	}
	_, err = e.client(func(cc *kp.ClientConfig) { cc.KeyRing = "ring-b" }).GetKeyMetadata(ctx(t), k.ID)
	wantKPError(t, err, 404, "KEY_NOT_FOUND_ERR")
}

func reEnvelope(t *testing.T, env *envelope) []byte {
	t.Helper()
	b, err := jsonMarshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(b))
}

func TestLastUpdateAndRotateDatesOnlyAfterAChange(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	status, _, body := e.raw("POST", "/api/v2/keys", []byte(`{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"fresh"}]}`))
	if status != 201 || bytes.Contains(body, []byte("lastUpdateDate")) || bytes.Contains(body, []byte("lastRotateDate")) {
		t.Fatalf("a new key's create answer: %d %s", status, body)
	}
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if root.LastUpdateDate != nil || root.LastRotateDate != nil || root.CreationDate == nil {
		t.Fatalf("create: %+v", root)
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.LastUpdateDate != nil || md.LastRotateDate != nil {
		t.Fatalf("metadata of a key never changed: %+v %v", md, err)
	}
	e.srv.AdvanceClock(time.Minute)
	if _, err := c.CreateKeyAlias(ctx(t), "an-alias", root.ID); err != nil {
		t.Fatal(err)
	}
	md, err = c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.LastUpdateDate == nil || !md.LastUpdateDate.After(*md.CreationDate) || md.LastRotateDate != nil {
		t.Fatalf("after an alias change: %+v %v", md, err)
	}
	if err := c.Rotate(ctx(t), root.ID, ""); err != nil {
		t.Fatal(err)
	}
	md, err = c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.LastRotateDate == nil || md.LastUpdateDate == nil || !md.LastUpdateDate.Equal(*md.LastRotateDate) {
		t.Fatalf("after a rotation: %+v %v", md, err)
	}
	other, err := c.CreateRootKey(ctx(t), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DisableKey(ctx(t), other.ID); err != nil {
		t.Fatal(err)
	}
	md, err = c.GetKeyMetadata(ctx(t), other.ID)
	if err != nil || md.LastUpdateDate == nil || md.LastRotateDate != nil {
		t.Fatalf("after a state change: %+v %v", md, err)
	}
}

func TestSyncWaitsAnHourAfterTheLastNotification(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	root, err := c.CreateRootKey(ctx(t), "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SyncAssociatedResources(ctx(t), root.ID); err != nil {
		t.Fatalf("sync of a key never notified: %v", err)
	}
	wantTooEarly := func(what string) {
		t.Helper()
		kerr := wantKPError(t, c.SyncAssociatedResources(ctx(t), root.ID), 409, "REQ_TOO_EARLY_ERR")
		if !strings.Contains(kerr.Reasons[0].Message, "The key was updated recently: Please wait and try again: Sync cannot be performed until at least ") ||
			!strings.HasPrefix(kerr.Message, "Conflict: Could not initiate sync requests to associated resources") {
			t.Fatalf("%s: %+v", what, kerr)
		}
	}
	wantTooEarly("second sync")
	e.srv.AdvanceClock(59 * time.Minute)
	wantTooEarly("59 minutes later")
	e.srv.AdvanceClock(2 * time.Minute)
	if err := c.SyncAssociatedResources(ctx(t), root.ID); err != nil {
		t.Fatalf("sync an hour after the last: %v", err)
	}
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"rotate", func() error { return c.Rotate(ctx(t), root.ID, "") }},
		{"disable", func() error { return c.DisableKey(ctx(t), root.ID) }},
		{"enable", func() error { return c.EnableKey(ctx(t), root.ID) }},
		{"delete", func() error { _, err := c.DeleteKey(ctx(t), root.ID, kp.ReturnMinimal); return err }},
		{"restore", func() error { _, err := c.RestoreKey(ctx(t), root.ID); return err }},
	} {
		e.srv.AdvanceClock(61 * time.Minute)
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		wantTooEarly("after " + step.name)
		if step.name == "delete" {
			e.srv.AdvanceClock(61 * time.Minute)
			if err := c.SyncAssociatedResources(ctx(t), root.ID); err != nil {
				t.Fatalf("a deleted key is synced too (sync-resources.md): %v", err)
			}
		}
	}
	md, err := c.GetKeyMetadata(ctx(t), root.ID)
	if err != nil || md.State != int(kp.Active) {
		t.Fatalf("after restore: %+v %v", md, err)
	}
}
