// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"slices"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/version"
)

// Versions are the KMIP protocol versions byokd speaks, newest first.
var Versions = []kmip.ProtocolVersion{kmip.V1_4, kmip.V1_3, kmip.V1_2, kmip.V1_1, kmip.V1_0}

// operations are the operations byokd answers; Discover Versions is
// answered by the library's executor. Anything else is Operation Not
// Supported.
var operations = []kmip.Operation{
	kmip.OperationDiscoverVersions, kmip.OperationQuery, kmip.OperationRegister, kmip.OperationCreate,
	kmip.OperationActivate, kmip.OperationGet, kmip.OperationGetAttributes, kmip.OperationGetAttributeList,
	kmip.OperationLocate, kmip.OperationRevoke, kmip.OperationDestroy, kmip.OperationEncrypt, kmip.OperationDecrypt,
}

// maxCryptData bounds the data of one Encrypt or Decrypt.
const maxCryptData = 64 << 10

// ops answers KMIP operations from a Store.
type ops struct {
	store *Store
	now   func() time.Time
}

// newExecutor routes every operation byokd answers to ops.
func newExecutor(o *ops) *kmipserver.BatchExecutor {
	exec := kmipserver.NewBatchExecutor()
	exec.SetSupportedProtocolVersions(slices.Clone(Versions)...)
	exec.Route(kmip.OperationQuery, kmipserver.HandleFunc(o.query))
	exec.Route(kmip.OperationRegister, kmipserver.HandleFunc(o.register))
	exec.Route(kmip.OperationCreate, kmipserver.HandleFunc(o.create))
	exec.Route(kmip.OperationActivate, kmipserver.HandleFunc(o.activate))
	exec.Route(kmip.OperationGet, kmipserver.HandleFunc(o.get))
	exec.Route(kmip.OperationGetAttributes, kmipserver.HandleFunc(o.getAttributes))
	exec.Route(kmip.OperationGetAttributeList, kmipserver.HandleFunc(o.getAttributeList))
	exec.Route(kmip.OperationLocate, kmipserver.HandleFunc(o.locate))
	exec.Route(kmip.OperationRevoke, kmipserver.HandleFunc(o.revoke))
	exec.Route(kmip.OperationDestroy, kmipserver.HandleFunc(o.destroy))
	exec.Route(kmip.OperationEncrypt, kmipserver.HandleFunc(o.encrypt))
	exec.Route(kmip.OperationDecrypt, kmipserver.HandleFunc(o.decrypt))
	return exec
}

func (o *ops) today() time.Time { return o.now().UTC().Truncate(time.Second) }

// kerr maps the store's errors to KMIP results. A lock is Operation
// Failed with the lock in the message.
func kerr(err error) error {
	var le *LockedError
	var ke kmipserver.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke):
		return err
	case errors.Is(err, ErrNotFound):
		return kmipserver.Errorf(kmip.ResultReasonItemNotFound, "no object with that unique identifier")
	case errors.As(err, &le):
		return kmipserver.Errorf(kmip.ResultReasonGeneralFailure, "%s", le.Error())
	case errors.Is(err, block.ErrOpen):
		return kmipserver.Errorf(kmip.ResultReasonCryptographicFailure, "the object's key material does not open under the node's key")
	case errors.Is(err, ErrFull), errors.Is(err, ErrRetry):
		return kmipserver.Errorf(kmip.ResultReasonGeneralFailure, "%v", err)
	}
	// Paths and sealer errors are for byokd's log, not for clients.
	return &internalError{err}
}

// internalError is a failure a client learns only the kind of; the server
// logs the detail.
type internalError struct{ err error }

func (e *internalError) Error() string { return "byokd internal error (see its log)" }
func (e *internalError) Unwrap() error { return e.err }

// clientOf is the Common Name of the connection's client certificate.
func clientOf(ctx context.Context) string {
	c, _ := ctx.Value(ctxClient{}).(string)
	return c
}

// lookup returns the object id names if the connection's client owns it;
// another client's object does not exist for it.
func (o *ops) lookup(ctx context.Context, id string) (*Object, error) {
	ob, ok := o.store.Get(id)
	if !ok || ob.Owner != clientOf(ctx) {
		return nil, ErrNotFound
	}
	return ob, nil
}

// owned is idOf, then lookup.
func (o *ops) owned(ctx context.Context, rawID string) (string, *Object, error) {
	id, err := idOf(ctx, rawID)
	if err != nil {
		return "", nil, err
	}
	ob, err := o.lookup(ctx, id)
	if err != nil {
		return "", nil, kerr(err)
	}
	return id, ob, nil
}

func idOf(ctx context.Context, id string) (string, error) {
	id, err := kmipserver.GetIdOrPlaceholder(ctx, id)
	if err != nil {
		return "", kmipserver.Errorf(kmip.ResultReasonMissingData, "no unique identifier in the request or from an earlier batch item")
	}
	return id, nil
}

func (o *ops) query(_ context.Context, req *payloads.QueryRequestPayload) (*payloads.QueryResponsePayload, error) {
	resp := &payloads.QueryResponsePayload{}
	for _, f := range req.QueryFunction {
		switch f {
		case kmip.QueryFunctionOperations:
			resp.Operations = slices.Clone(operations)
		case kmip.QueryFunctionObjects:
			resp.ObjectType = []kmip.ObjectType{kmip.ObjectTypeSymmetricKey}
		case kmip.QueryFunctionServerInformation:
			resp.VendorIdentification = "byokd " + version.Version
		}
	}
	return resp, nil
}

// attrs are the attributes a client may set in Register and Create.
type attrs struct {
	names  []string
	mask   kmip.CryptographicUsageMask
	alg    kmip.CryptographicAlgorithm
	length int32
}

func parseTemplate(t kmip.TemplateAttribute) (attrs, error) {
	var a attrs
	//lint:ignore SA1019 clients of KMIP 1.0 to 1.2 send names here
	for _, n := range t.Name {
		a.names = append(a.names, n.NameValue)
	}
	for _, at := range t.Attribute {
		switch at.AttributeName {
		case kmip.AttributeNameName:
			n, ok := at.AttributeValue.(kmip.Name)
			if !ok || n.NameValue == "" {
				return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Name: want a non-empty name")
			}
			a.names = append(a.names, n.NameValue)
		case kmip.AttributeNameCryptographicUsageMask:
			m, ok := at.AttributeValue.(kmip.CryptographicUsageMask)
			if !ok {
				return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Cryptographic Usage Mask: want an integer mask")
			}
			a.mask = m
		case kmip.AttributeNameCryptographicAlgorithm:
			alg, ok := at.AttributeValue.(kmip.CryptographicAlgorithm)
			if !ok {
				return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Cryptographic Algorithm: want an enumeration")
			}
			a.alg = alg
		case kmip.AttributeNameCryptographicLength:
			l, ok := at.AttributeValue.(int32)
			if !ok {
				return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Cryptographic Length: want an integer")
			}
			a.length = l
		default:
			// Attributes byokd does not keep (Activation Date, Object
			// Group, Cryptographic Parameters...) are accepted and not
			// stored, as a server may under KMIP 1.x.
		}
	}
	for _, n := range a.names {
		if len(n) > 255 {
			return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Name: at most 255 bytes")
		}
	}
	if len(a.names) > 16 {
		return a, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Name: at most 16 names")
	}
	return a, nil
}

func checkAES(alg kmip.CryptographicAlgorithm, bits int32) error {
	if alg != kmip.CryptographicAlgorithmAES {
		return kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd keeps AES keys only")
	}
	if bits != 128 && bits != 192 && bits != 256 {
		return kmipserver.Errorf(kmip.ResultReasonInvalidField, "Cryptographic Length %d: want 128, 192 or 256", bits)
	}
	return nil
}

func (o *ops) newObject(ctx context.Context, a attrs) Object {
	mask := a.mask
	if mask == 0 {
		mask = kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt
	}
	now := o.today()
	return Object{Algorithm: "AES", Length: a.length, UsageMask: int32(mask), Names: a.names, Owner: clientOf(ctx),
		State: statePreActive, Initial: now, LastChange: now}
}

func (o *ops) register(ctx context.Context, req *payloads.RegisterRequestPayload) (*payloads.RegisterResponsePayload, error) {
	key, ok := req.Object.(*kmip.SymmetricKey)
	if req.ObjectType != kmip.ObjectTypeSymmetricKey || !ok {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd registers symmetric keys only")
	}
	kb := key.KeyBlock
	if kb.KeyWrappingData != nil || kb.KeyValue == nil || kb.KeyValue.Plain == nil {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd registers plain (unwrapped) key values only")
	}
	if kb.KeyFormatType != kmip.KeyFormatTypeRaw && kb.KeyFormatType != kmip.KeyFormatTypeTransparentSymmetricKey {
		return nil, kmipserver.Errorf(kmip.ResultReasonKeyFormatTypeNotSupported, "byokd takes Raw or Transparent Symmetric Key formats")
	}
	var material []byte
	switch km := kb.KeyValue.Plain.KeyMaterial; {
	case kb.KeyFormatType == kmip.KeyFormatTypeRaw && km.Bytes != nil:
		material = *km.Bytes
	case kb.KeyFormatType == kmip.KeyFormatTypeTransparentSymmetricKey && km.TransparentSymmetricKey != nil:
		material = km.TransparentSymmetricKey.Key
	}
	if len(material) == 0 {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "no key material of the key format type")
	}
	a, err := parseTemplate(req.TemplateAttribute)
	if err != nil {
		return nil, err
	}
	if a.alg == 0 {
		a.alg = kb.CryptographicAlgorithm
	}
	if a.length == 0 {
		a.length = kb.CryptographicLength
	}
	if a.length == 0 {
		a.length = int32(len(material) * 8)
	}
	if err := checkAES(a.alg, a.length); err != nil {
		return nil, err
	}
	if int(a.length) != len(material)*8 || (kb.CryptographicLength != 0 && kb.CryptographicLength != a.length) {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "the key material is %d bits, the attributes say %d", len(material)*8, a.length)
	}
	obj, err := o.store.Add(ctx, o.newObject(ctx, a), material)
	if err != nil {
		return nil, kerr(err)
	}
	kmipserver.SetIdPlaceholder(ctx, obj.ID)
	return &payloads.RegisterResponsePayload{UniqueIdentifier: obj.ID}, nil
}

func (o *ops) create(ctx context.Context, req *payloads.CreateRequestPayload) (*payloads.CreateResponsePayload, error) {
	if req.ObjectType != kmip.ObjectTypeSymmetricKey {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd creates symmetric keys only")
	}
	a, err := parseTemplate(req.TemplateAttribute)
	if err != nil {
		return nil, err
	}
	if a.alg == 0 {
		a.alg = kmip.CryptographicAlgorithmAES
	}
	if a.length == 0 {
		a.length = 256
	}
	if err := checkAES(a.alg, a.length); err != nil {
		return nil, err
	}
	material := make([]byte, a.length/8)
	defer secmem.Wipe(material)
	if _, err := rand.Read(material); err != nil {
		return nil, kerr(err)
	}
	obj, err := o.store.Add(ctx, o.newObject(ctx, a), material)
	if err != nil {
		return nil, kerr(err)
	}
	kmipserver.SetIdPlaceholder(ctx, obj.ID)
	return &payloads.CreateResponsePayload{ObjectType: kmip.ObjectTypeSymmetricKey, UniqueIdentifier: obj.ID}, nil
}

func wrongState(op string, ob *Object) error {
	return kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "%s: the object is %s", op, ob.State)
}

func (o *ops) activate(ctx context.Context, req *payloads.ActivateRequestPayload) (*payloads.ActivateResponsePayload, error) {
	id, _, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	_, err = o.store.Update(id, func(ob *Object) error {
		if ob.State != statePreActive {
			return wrongState("Activate", ob)
		}
		now := o.today()
		ob.State, ob.Activation = stateActive, &now
		return nil
	})
	if err != nil {
		return nil, kerr(err)
	}
	return &payloads.ActivateResponsePayload{UniqueIdentifier: id}, nil
}

func (o *ops) revoke(ctx context.Context, req *payloads.RevokeRequestPayload) (*payloads.RevokeResponsePayload, error) {
	id, _, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	_, err = o.store.Update(id, func(ob *Object) error {
		now := o.today()
		switch code := req.RevocationReason.RevocationReasonCode; {
		case code == kmip.RevocationReasonCodeKeyCompromise || code == kmip.RevocationReasonCodeCACompromise:
			ob.State, ob.Compromise = stateCompromised, &now
		case ob.State == statePreActive || ob.State == stateActive:
			ob.State, ob.Deactivation = stateDeactivated, &now
		default:
			return wrongState("Revoke", ob)
		}
		return nil
	})
	if err != nil {
		return nil, kerr(err)
	}
	return &payloads.RevokeResponsePayload{UniqueIdentifier: id}, nil
}

func (o *ops) destroy(ctx context.Context, req *payloads.DestroyRequestPayload) (*payloads.DestroyResponsePayload, error) {
	id, _, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	err = o.store.Remove(id, func(ob *Object) error {
		if ob.State == stateActive {
			return kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "Destroy: the object is Active; revoke it first")
		}
		return nil
	})
	if err != nil {
		return nil, kerr(err)
	}
	return &payloads.DestroyResponsePayload{UniqueIdentifier: id}, nil
}

func (o *ops) get(ctx context.Context, req *payloads.GetRequestPayload) (*payloads.GetResponsePayload, error) {
	id, _, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if req.KeyWrappingSpecification != nil || req.KeyCompressionType != 0 {
		return nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "byokd returns keys unwrapped and uncompressed")
	}
	format := req.KeyFormatType
	if format == 0 {
		format = kmip.KeyFormatTypeRaw
	}
	if format != kmip.KeyFormatTypeRaw && format != kmip.KeyFormatTypeTransparentSymmetricKey {
		return nil, kmipserver.Errorf(kmip.ResultReasonKeyFormatTypeNotSupported, "byokd returns Raw or Transparent Symmetric Key formats")
	}
	ob, material, err := o.store.Material(ctx, id)
	if err != nil {
		return nil, kerr(err)
	}
	km := kmip.KeyMaterial{}
	if format == kmip.KeyFormatTypeRaw {
		km.Bytes = &material
	} else {
		km.TransparentSymmetricKey = &kmip.TransparentSymmetricKey{Key: material}
	}
	// The material goes out in this response and is wiped by the server
	// once the response is written (see wipeResponse).
	return &payloads.GetResponsePayload{
		ObjectType:       kmip.ObjectTypeSymmetricKey,
		UniqueIdentifier: id,
		Object: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{
			KeyFormatType:          format,
			KeyValue:               &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: km}},
			CryptographicAlgorithm: kmip.CryptographicAlgorithmAES,
			CryptographicLength:    ob.Length,
		}},
	}, nil
}

// effectiveState is the state a client sees: an Active object whose key
// the node cannot serve now (the node is locked, or serves another data
// key than the one the object is sealed under) is Deactivated, so that a
// database that polls the state stops.
func (o *ops) effectiveState(ob *Object) kmip.State {
	st := stateEnum(ob.State)
	if st == kmip.StateActive && !o.store.Serving(ob) {
		return kmip.StateDeactivated
	}
	return st
}

func stateEnum(s string) kmip.State {
	switch s {
	case statePreActive:
		return kmip.StatePreActive
	case stateActive:
		return kmip.StateActive
	case stateDeactivated:
		return kmip.StateDeactivated
	case stateCompromised:
		return kmip.StateCompromised
	}
	return kmip.StateDeactivated
}

// attributes lists every attribute byokd keeps for an object, in the
// order Get Attribute List names them.
func (o *ops) attributes(ob *Object) []kmip.Attribute {
	at := func(name kmip.AttributeName, v any) kmip.Attribute {
		return kmip.Attribute{AttributeName: name, AttributeValue: v}
	}
	out := []kmip.Attribute{
		at(kmip.AttributeNameUniqueIdentifier, ob.ID),
		at(kmip.AttributeNameObjectType, kmip.ObjectTypeSymmetricKey),
		at(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmAES),
		at(kmip.AttributeNameCryptographicLength, ob.Length),
		at(kmip.AttributeNameCryptographicUsageMask, kmip.CryptographicUsageMask(ob.UsageMask)),
		at(kmip.AttributeNameState, o.effectiveState(ob)),
		at(kmip.AttributeNameInitialDate, ob.Initial),
		at(kmip.AttributeNameLastChangeDate, ob.LastChange),
	}
	for i, n := range ob.Names {
		idx := int32(i)
		out = append(out, kmip.Attribute{AttributeName: kmip.AttributeNameName, AttributeIndex: &idx,
			AttributeValue: kmip.Name{NameValue: n, NameType: kmip.NameTypeUninterpretedTextString}})
	}
	for _, d := range []struct {
		name kmip.AttributeName
		t    *time.Time
	}{
		{kmip.AttributeNameActivationDate, ob.Activation},
		{kmip.AttributeNameDeactivationDate, ob.Deactivation},
		{kmip.AttributeNameCompromiseDate, ob.Compromise},
	} {
		if d.t != nil {
			out = append(out, at(d.name, *d.t))
		}
	}
	return out
}

func (o *ops) getAttributes(ctx context.Context, req *payloads.GetAttributesRequestPayload) (*payloads.GetAttributesResponsePayload, error) {
	id, ob, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	all := o.attributes(ob)
	if len(req.AttributeName) == 0 {
		return &payloads.GetAttributesResponsePayload{UniqueIdentifier: id, Attribute: all}, nil
	}
	resp := &payloads.GetAttributesResponsePayload{UniqueIdentifier: id}
	for _, a := range all {
		if slices.Contains(req.AttributeName, a.AttributeName) {
			resp.Attribute = append(resp.Attribute, a)
		}
	}
	return resp, nil
}

func (o *ops) getAttributeList(ctx context.Context, req *payloads.GetAttributeListRequestPayload) (*payloads.GetAttributeListResponsePayload, error) {
	id, ob, err := o.owned(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	resp := &payloads.GetAttributeListResponsePayload{UniqueIdentifier: id}
	for _, a := range o.attributes(ob) {
		if !slices.Contains(resp.AttributeName, a.AttributeName) {
			resp.AttributeName = append(resp.AttributeName, a.AttributeName)
		}
	}
	return resp, nil
}

// matches says whether an object has the attribute a client locates by.
// An attribute byokd does not keep matches no object.
func (o *ops) matches(ob *Object, a kmip.Attribute) bool {
	switch a.AttributeName {
	case kmip.AttributeNameName:
		n, ok := a.AttributeValue.(kmip.Name)
		return ok && slices.Contains(ob.Names, n.NameValue)
	case kmip.AttributeNameState:
		s, ok := a.AttributeValue.(kmip.State)
		return ok && o.effectiveState(ob) == s
	case kmip.AttributeNameObjectType:
		t, ok := a.AttributeValue.(kmip.ObjectType)
		return ok && t == kmip.ObjectTypeSymmetricKey
	case kmip.AttributeNameCryptographicAlgorithm:
		alg, ok := a.AttributeValue.(kmip.CryptographicAlgorithm)
		return ok && alg == kmip.CryptographicAlgorithmAES
	case kmip.AttributeNameCryptographicLength:
		l, ok := a.AttributeValue.(int32)
		return ok && l == ob.Length
	case kmip.AttributeNameUniqueIdentifier:
		id, ok := a.AttributeValue.(string)
		return ok && id == ob.ID
	}
	return false
}

// MaxLocated bounds the identifiers one Locate returns.
const MaxLocated = 256

// maxLocated is MaxLocated; tests lower it.
var maxLocated = MaxLocated

func (o *ops) locate(ctx context.Context, req *payloads.LocateRequestPayload) (*payloads.LocateResponsePayload, error) {
	resp := &payloads.LocateResponsePayload{}
	skip := int(req.OffsetItems)
	limit := int32(maxLocated)
	if req.MaximumItems > 0 && req.MaximumItems < limit {
		limit = req.MaximumItems
	}
	client := clientOf(ctx)
	var found int32
	for _, ob := range o.store.List() {
		if ob.Owner != client || !allMatch(o, ob, req.Attribute) {
			continue
		}
		found++
		if skip > 0 {
			skip--
			continue
		}
		if int32(len(resp.UniqueIdentifier)) >= limit {
			continue
		}
		resp.UniqueIdentifier = append(resp.UniqueIdentifier, ob.ID)
	}
	resp.LocatedItems = &found
	return resp, nil
}

func allMatch(o *ops, ob *Object, as []kmip.Attribute) bool {
	for _, a := range as {
		if !o.matches(ob, a) {
			return false
		}
	}
	return true
}

// cryptParams reads the mode a client asks for: AES-GCM when it names
// none, or AES-CBC with PKCS#5 padding.
func cryptParams(p *kmip.CryptographicParameters) (kmip.BlockCipherMode, error) {
	if p == nil || p.BlockCipherMode == 0 {
		return kmip.BlockCipherModeGCM, nil
	}
	if p.CryptographicAlgorithm != 0 && p.CryptographicAlgorithm != kmip.CryptographicAlgorithmAES {
		return 0, kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd keeps AES keys only")
	}
	switch p.BlockCipherMode {
	case kmip.BlockCipherModeGCM:
		if p.TagLength != 0 && p.TagLength != 16 {
			return 0, kmipserver.Errorf(kmip.ResultReasonInvalidField, "GCM tag length must be 16")
		}
		return kmip.BlockCipherModeGCM, nil
	case kmip.BlockCipherModeCBC:
		if p.PaddingMethod != 0 && p.PaddingMethod != kmip.PaddingMethodPKCS5 {
			return 0, kmipserver.Errorf(kmip.ResultReasonInvalidField, "CBC takes PKCS5 padding only")
		}
		return kmip.BlockCipherModeCBC, nil
	}
	return 0, kmipserver.Errorf(kmip.ResultReasonInvalidField, "byokd encrypts with AES-GCM or AES-CBC (PKCS5)")
}

// usable loads an object's material for Encrypt or Decrypt: the object
// must be Active (Decrypt also takes Deactivated) and allow the usage.
func (o *ops) usable(ctx context.Context, id string, usage kmip.CryptographicUsageMask, states ...string) (*Object, []byte, error) {
	ob, err := o.lookup(ctx, id)
	if err != nil {
		return nil, nil, kerr(err)
	}
	if !slices.Contains(states, ob.State) {
		return nil, nil, wrongState("the operation", ob)
	}
	if kmip.CryptographicUsageMask(ob.UsageMask)&usage == 0 {
		return nil, nil, kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "the object's Cryptographic Usage Mask does not allow this use")
	}
	ob, material, err := o.store.Material(ctx, id)
	if err != nil {
		return nil, nil, kerr(err)
	}
	return ob, material, nil
}

// sinceV12 refuses Encrypt and Decrypt under KMIP 1.0 and 1.1, which do
// not have them.
func sinceV12(ctx context.Context) error {
	if ttlv.CompareVersions(kmipserver.GetProtocolVersion(ctx), kmip.V1_2) < 0 {
		return kmipserver.Errorf(kmip.ResultReasonOperationNotSupported, "Encrypt and Decrypt are KMIP 1.2 operations")
	}
	return nil
}

// cipherFor is what Encrypt and Decrypt share: the version, the request's
// checks, the object's state and usage, and an AES block under its key,
// with the func that wipes both once the call is done.
func (o *ops) cipherFor(ctx context.Context, op, rawID string, p *kmip.CryptographicParameters, data []byte, init, final *bool,
	usage kmip.CryptographicUsageMask, states ...string) (id string, mode kmip.BlockCipherMode, b cipher.Block, done func(), err error) {
	if err := sinceV12(ctx); err != nil {
		return "", 0, nil, nil, err
	}
	if id, err = idOf(ctx, rawID); err != nil {
		return "", 0, nil, nil, err
	}
	if mode, err = cryptParams(p); err != nil {
		return "", 0, nil, nil, err
	}
	if len(data) == 0 || len(data) > maxCryptData {
		return "", 0, nil, nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "Data: 1 to %d bytes", maxCryptData)
	}
	if init != nil || final != nil {
		return "", 0, nil, nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "streaming %s is not supported", op)
	}
	_, key, err := o.usable(ctx, id, usage, states...)
	if err != nil {
		return "", 0, nil, nil, err
	}
	b, err = aes.NewCipher(key)
	secmem.Wipe(key)
	if err != nil {
		return "", 0, nil, nil, kerr(err)
	}
	return id, mode, b, func() { block.WipeCipher(b) }, nil
}

func (o *ops) encrypt(ctx context.Context, req *payloads.EncryptRequestPayload) (*payloads.EncryptResponsePayload, error) {
	id, mode, b, done, err := o.cipherFor(ctx, "Encrypt", req.UniqueIdentifier, req.CryptographicParameters, req.Data,
		req.InitIndicator, req.FinalIndicator, kmip.CryptographicUsageEncrypt, stateActive)
	if err != nil {
		return nil, err
	}
	defer done()
	resp := &payloads.EncryptResponsePayload{UniqueIdentifier: id, CorrelationValue: req.CorrelationValue}
	iv := req.IVCounterNonce
	switch mode {
	case kmip.BlockCipherModeGCM:
		if iv == nil {
			iv = make([]byte, 12)
			rand.Read(iv)
			resp.IVCounterNonce = iv
		}
		g, err := cipher.NewGCMWithNonceSize(b, len(iv))
		if err != nil || len(iv) < 12 {
			return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "GCM: IV of 12 or more bytes")
		}
		defer block.WipeCipher(g)
		ct := g.Seal(nil, iv, req.Data, req.AuthenticatedEncryptionAdditionalData)
		if ttlv.CompareVersions(kmipserver.GetProtocolVersion(ctx), kmip.V1_4) >= 0 {
			resp.Data, resp.AuthenticatedEncryptionTag = ct[:len(ct)-16], ct[len(ct)-16:]
		} else {
			// Before KMIP 1.4 there is no tag field: the tag follows
			// the ciphertext, as Decrypt then expects it.
			resp.Data = ct
		}
	case kmip.BlockCipherModeCBC:
		if iv == nil {
			iv = make([]byte, aes.BlockSize)
			rand.Read(iv)
			resp.IVCounterNonce = iv
		}
		if len(iv) != aes.BlockSize {
			return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "CBC: IV of 16 bytes")
		}
		pad := aes.BlockSize - len(req.Data)%aes.BlockSize
		buf := make([]byte, len(req.Data)+pad) // exact: no copy of the plaintext left behind by a growth
		copy(buf, req.Data)
		for i := len(req.Data); i < len(buf); i++ {
			buf[i] = byte(pad)
		}
		m := cipher.NewCBCEncrypter(b, iv)
		m.CryptBlocks(buf, buf)
		block.WipeCipher(m)
		resp.Data = buf
	}
	return resp, nil
}

func (o *ops) decrypt(ctx context.Context, req *payloads.DecryptRequestPayload) (*payloads.DecryptResponsePayload, error) {
	id, mode, b, done, err := o.cipherFor(ctx, "Decrypt", req.UniqueIdentifier, req.CryptographicParameters, req.Data,
		req.InitIndicator, req.FinalIndicator, kmip.CryptographicUsageDecrypt, stateActive, stateDeactivated)
	if err != nil {
		return nil, err
	}
	defer done()
	iv := req.IVCounterNonce
	failed := kmipserver.Errorf(kmip.ResultReasonCryptographicFailure, "the data does not decrypt under this key")
	switch mode {
	case kmip.BlockCipherModeGCM:
		if len(iv) < 12 {
			return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "GCM: IV of 12 or more bytes")
		}
		g, err := cipher.NewGCMWithNonceSize(b, len(iv))
		if err != nil {
			return nil, kerr(err)
		}
		defer block.WipeCipher(g)
		ct := req.Data
		if len(req.AuthenticatedEncryptionTag) > 0 {
			ct = make([]byte, 0, len(req.Data)+len(req.AuthenticatedEncryptionTag))
			ct = append(append(ct, req.Data...), req.AuthenticatedEncryptionTag...)
		}
		pt, err := g.Open(nil, iv, ct, req.AuthenticatedEncryptionAdditionalData)
		if err != nil {
			return nil, failed
		}
		return &payloads.DecryptResponsePayload{UniqueIdentifier: id, Data: pt, CorrelationValue: req.CorrelationValue}, nil
	default:
		if len(iv) != aes.BlockSize || len(req.Data)%aes.BlockSize != 0 {
			return nil, failed
		}
		buf := slices.Clone(req.Data)
		m := cipher.NewCBCDecrypter(b, iv)
		m.CryptBlocks(buf, buf)
		block.WipeCipher(m)
		pad := int(buf[len(buf)-1])
		bad := pad == 0 || pad > aes.BlockSize
		for i := 0; !bad && i < pad; i++ {
			bad = int(buf[len(buf)-1-i]) != pad
		}
		if bad {
			secmem.Wipe(buf)
			return nil, failed
		}
		return &payloads.DecryptResponsePayload{UniqueIdentifier: id, Data: buf[:len(buf)-pad], CorrelationValue: req.CorrelationValue}, nil
	}
}
