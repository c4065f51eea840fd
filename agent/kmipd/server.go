// SPDX-License-Identifier: Apache-2.0

// Package kmipd is byokd's KMIP server: KMIP 1.0 to 1.4 over TLS with
// client certificates, for databases that take their master key over KMIP
// (Percona Server for MongoDB, MongoDB Enterprise). Objects are AES keys
// kept in a Store, each sealed under a key derived from the node's DEK, so
// they are served only while the node is unlocked and are gone with the
// root key.
//
// TTLV, the message types and the batch executor are
// github.com/ovh/kmip-go's; the connection loop is byokd's own, for its
// deadlines, size limits, logging and wiping of the buffers that carry
// key material.
package kmipd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/kmiptls"
	"github.com/byokd/byokd/crypto/secmem"
)

// Limits of one connection.
const (
	// MaxMessage bounds a request message (TTLV header included).
	MaxMessage = 1 << 20
	// MaxConns bounds the authenticated connections served at once; more
	// are refused after their handshake.
	MaxConns = 64
	// MaxHandshakes bounds the connections in their TLS handshake, which
	// anyone who reaches the port can open: when all are taken, the
	// oldest is closed for the new one, so that idle connections cannot
	// keep the database out.
	MaxHandshakes = 128
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout = 5 * time.Second
	// MaxBatchItems bounds the operations of one request.
	MaxBatchItems = 16
	// MaxResponse bounds a response message; a larger one is replaced by
	// Response Too Large.
	MaxResponse = 1 << 20
	// IdleTimeout closes a connection that sends no request for so long.
	IdleTimeout = 2 * time.Minute
	// IOTimeout bounds reading the rest of a request once it started,
	// and writing a response.
	IOTimeout = 30 * time.Second
)

// Metrics counts what the server does; agent/metrics does.
type Metrics interface {
	// KMIPRequest counts an operation by its result: "ok" or a KMIP
	// result reason.
	KMIPRequest(op, result string)
	// KMIPRefused counts a refused connection: "tls",
	// "client-not-allowed", "malformed" or "too-many".
	KMIPRefused(reason string)
}

type noMetrics struct{}

func (noMetrics) KMIPRequest(string, string) {}
func (noMetrics) KMIPRefused(string)         {}

// Config is what a Server needs.
type Config struct {
	Store   *Store
	TLS     *tls.Config
	Log     *slog.Logger
	Metrics Metrics // nil counts nothing
	Now     func() time.Time
}

// Server serves KMIP on a listener.
type Server struct {
	cfg  Config
	log  *slog.Logger
	exec *kmipserver.BatchExecutor
	sem  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	conns       map[net.Conn]struct{}  // guarded by mu
	handshaking map[net.Conn]time.Time // guarded by mu
	lns         []net.Listener         // guarded by mu
	done        bool                   // guarded by mu

	logMu      sync.Mutex
	logWindow  time.Time // guarded by logMu
	logged     int       // guarded by logMu
	suppressed int       // guarded by logMu
}

// NewServer makes a server; Serve runs it.
func NewServer(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, sem: make(chan struct{}, MaxConns), ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}, handshaking: map[net.Conn]time.Time{}}
	s.exec = newExecutor(&ops{store: cfg.Store, now: cfg.Now})
	s.exec.BatchItemUse(s.logItem)
	return s
}

// Serve accepts TCP connections on ln and serves each over TLS until
// Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.stopping() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("kmip accept: %w", err)
			}
			// Out of file descriptors, a connection reset before accept:
			// wait a little and go on, as net/http does, rather than take
			// byokd down with the key provider.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("kmip accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		// In accept order, so that the connections evicted for room are
		// the ones that waited longest.
		s.handshakeStarts(c)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// track records c and counts it in wg, under mu, so that no Add races
// Shutdown's Wait: once done is set, nothing is added.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.handshaking, c)
	s.mu.Unlock()
}

// handshakeStarts makes room for c's handshake, closing the oldest one in
// progress when MaxHandshakes are. The accept loop calls it.
func (s *Server) handshakeStarts(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.handshaking) >= MaxHandshakes {
		var oldest net.Conn
		var at time.Time
		for o, t := range s.handshaking {
			if oldest == nil || t.Before(at) {
				oldest, at = o, t
			}
		}
		delete(s.handshaking, oldest)
		oldest.Close()
	}
	s.handshaking[c] = time.Now()
}

func (s *Server) handshakeEnds(c net.Conn) {
	s.mu.Lock()
	delete(s.handshaking, c)
	s.mu.Unlock()
}

func (s *Server) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.done = true
	for _, ln := range s.lns {
		ln.Close()
	}
	// Idle connections wait in a read: wake them now.
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.cancel()
}

type ctxClient struct{}

// refusalLogsPerSecond bounds the refusals logged one by one; the
// metric counts them all.
const refusalLogsPerSecond = 10

func (s *Server) refuse(kind, remote, why string) {
	s.cfg.Metrics.KMIPRefused(kind)
	s.logMu.Lock()
	now := s.cfg.Now()
	if now.Sub(s.logWindow) >= time.Second {
		if s.suppressed > 0 {
			audit.Warn(s.log, "kmip connections refused and not logged one by one", audit.KMIPRefuse,
				audit.Reason(fmt.Sprintf("%d more refusals in the last second; byokd_kmip_connections_refused_total counts them", s.suppressed)))
		}
		s.logWindow, s.logged, s.suppressed = now, 0, 0
	}
	s.logged++
	quiet := s.logged > refusalLogsPerSecond
	if quiet {
		s.suppressed++
	}
	s.logMu.Unlock()
	if !quiet {
		audit.Warn(s.log, "kmip connection refused", audit.KMIPRefuse, audit.Remote(remote), audit.Reason(why))
	}
}

func (s *Server) serveConn(raw net.Conn) {
	remote := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(HandshakeTimeout))
	tc := tls.Server(raw, s.cfg.TLS)
	err := tc.HandshakeContext(s.ctx)
	s.handshakeEnds(raw)
	if err != nil {
		kind := "tls"
		if strings.Contains(err.Error(), kmiptls.NotAllowed) {
			kind = "client-not-allowed"
		}
		s.refuse(kind, remote, "TLS handshake: "+err.Error())
		return
	}
	// The record buffer held the requests in the clear: wipe it when the
	// connection is done.
	defer wipeTLSInput(tc)
	client := tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.refuse("too-many", remote, fmt.Sprintf("%s: %d connections already served", client, MaxConns))
		return
	}
	ctx := context.WithValue(s.ctx, ctxClient{}, client)
	s.log.Debug("kmip connection", "remote", remote, "client", client)
	enc := ttlv.NewTTLVEncoder()
	for !s.stopping() {
		_ = tc.SetDeadline(time.Now().Add(IdleTimeout))
		req, err := s.readRequest(tc, func() { _ = tc.SetDeadline(time.Now().Add(IOTimeout)) })
		if err != nil {
			var me *malformedError
			switch {
			case errors.As(err, &me):
				s.refuse("malformed", remote, "malformed request from "+client+": "+me.Error())
				_ = tc.SetDeadline(time.Now().Add(IOTimeout))
				if s.write(tc, &enc, errorResponse(kmip.ResultReasonInvalidMessage, me.Error())) == nil {
					lingerClose(tc)
				}
			case errors.Is(err, io.EOF):
			default:
				s.log.Debug("kmip connection closed", "remote", remote, "client", client, "err", err)
			}
			return
		}
		if tlsInputIdle(tc) {
			wipeTLSInput(tc)
		}
		resp := s.exec.HandleRequest(ctx, req)
		wipeRequest(req)
		_ = tc.SetDeadline(time.Now().Add(IOTimeout))
		err = s.write(tc, &enc, resp)
		wipeResponse(resp)
		if err != nil {
			s.log.Debug("kmip write", "remote", remote, "client", client, "err", err)
			return
		}
	}
}

// lingerClose ends a connection whose client may still be sending (the
// rest of a malformed message): closing with unread input would reset the
// connection, and the client could lose the answer just written. So byokd
// says it is done writing and reads what comes, for a second and 1 MiB at
// most, before the caller closes.
func lingerClose(tc *tls.Conn) {
	_ = tc.CloseWrite()
	_ = tc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(tc, MaxMessage))
}

// malformedError is a request that is not a KMIP request message.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

// ttlvStructure is the TTLV item type of a structure.
const ttlvStructure = 0x01

// readRequest reads one request message: its 8-byte TTLV header (tag
// Request Message, type Structure, length), then its body, decoded and
// then wiped. A header that is not a request message's fails at once,
// without reading further.
func (s *Server) readRequest(r io.Reader, onHeader func()) (*kmip.RequestMessage, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, err
	}
	// The request started: the rest of it has IOTimeout.
	onHeader()
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return nil, unexpected(err)
	}
	tag := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	n := binary.BigEndian.Uint32(hdr[4:])
	switch {
	case tag != kmip.TagRequestMessage:
		return nil, &malformedError{fmt.Sprintf("not a KMIP request message (tag %#06x)", tag)}
	case hdr[3] != ttlvStructure:
		return nil, &malformedError{"a request message must be a structure"}
	case n%8 != 0 || uint64(n)+8 > MaxMessage:
		return nil, &malformedError{fmt.Sprintf("request message of %d bytes: want a multiple of 8 up to %d", n, MaxMessage-8)}
	}
	buf := make([]byte, 8+int(n))
	defer secmem.Wipe(buf)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[8:]); err != nil {
		return nil, unexpected(err)
	}
	return Decode(buf)
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Decode decodes one TTLV request message. Any decoding failure, including
// a panic of the decoder, is a malformedError; it never names the bytes.
func Decode(buf []byte) (req *kmip.RequestMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			req, err = nil, &malformedError{"undecodable TTLV"}
		}
	}()
	var m kmip.RequestMessage
	if err := ttlv.UnmarshalTTLV(buf, &m); err != nil {
		return nil, &malformedError{"undecodable TTLV: " + shortErr(err)}
	}
	if len(m.BatchItem) == 0 {
		return nil, &malformedError{"no batch item"}
	}
	if len(m.BatchItem) > MaxBatchItems {
		return nil, &malformedError{fmt.Sprintf("%d batch items: byokd takes at most %d", len(m.BatchItem), MaxBatchItems)}
	}
	return &m, nil
}

// shortErr keeps a decoder error to its first line and 200 bytes.
func shortErr(err error) string {
	msg := err.Error()
	for i := 0; i < len(msg); i++ {
		if msg[i] == '\n' {
			msg = msg[:i]
			break
		}
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

// errorResponse answers a request that could not be read or answered.
func errorResponse(reason kmip.ResultReason, msg string) *kmip.ResponseMessage {
	return &kmip.ResponseMessage{
		Header: kmip.ResponseHeader{ProtocolVersion: kmip.V1_0, TimeStamp: time.Now().Truncate(time.Second), BatchCount: 1},
		BatchItem: []kmip.ResponseBatchItem{{
			ResultStatus:  kmip.ResultStatusOperationFailed,
			ResultReason:  reason,
			ResultMessage: msg,
		}},
	}
}

// write encodes resp with the connection's encoder and sends it, then
// wipes the encoding. The encoder's buffer grows by copying, which would
// leave copies of key material in memory nobody wipes: so resp is first
// encoded with its secrets swapped for zeros of the same length, which
// grows the buffer to the exact size, and then, into the same buffer,
// with them.
func (s *Server) write(w io.Writer, enc *ttlv.Encoder, resp *kmip.ResponseMessage) error {
	secrets := responseSecrets(resp)
	saved := make([][]byte, len(secrets))
	for i, p := range secrets {
		saved[i], *p = *p, make([]byte, len(*p))
	}
	enc.Clear()
	enc.Any(resp)
	for i, p := range secrets {
		*p = saved[i]
	}
	size := len(enc.Bytes())
	if size > MaxResponse {
		secmem.Wipe(enc.Bytes())
		resp = errorResponse(kmip.ResultReasonResponseTooLarge, fmt.Sprintf("the response is %d bytes, over byokd's %d", size, MaxResponse))
	}
	enc.Clear()
	enc.Any(resp)
	b := enc.Bytes()
	_, err := w.Write(b)
	secmem.Wipe(b)
	return err
}

// responseSecrets points at the key material and plaintext a response
// carries.
func responseSecrets(resp *kmip.ResponseMessage) []*[]byte {
	var out []*[]byte
	for _, bi := range resp.BatchItem {
		switch p := bi.ResponsePayload.(type) {
		case *payloads.GetResponsePayload:
			if p != nil {
				out = append(out, keyMaterial(p.Object)...)
			}
		case *payloads.DecryptResponsePayload:
			if p != nil {
				out = append(out, &p.Data)
			}
		}
	}
	return out
}

// requestSecrets points at the key material and data a request carries.
func requestSecrets(req *kmip.RequestMessage) []*[]byte {
	var out []*[]byte
	for _, bi := range req.BatchItem {
		switch p := bi.RequestPayload.(type) {
		case *payloads.RegisterRequestPayload:
			if p != nil {
				out = append(out, keyMaterial(p.Object)...)
			}
		case *payloads.EncryptRequestPayload:
			if p != nil {
				out = append(out, &p.Data)
			}
		case *payloads.DecryptRequestPayload:
			if p != nil {
				out = append(out, &p.Data)
			}
		}
	}
	return out
}

// keyMaterial points at the plain key bytes of a symmetric key object.
func keyMaterial(o kmip.Object) []*[]byte {
	k, ok := o.(*kmip.SymmetricKey)
	if !ok || k == nil || k.KeyBlock.KeyValue == nil || k.KeyBlock.KeyValue.Plain == nil {
		return nil
	}
	km := &k.KeyBlock.KeyValue.Plain.KeyMaterial
	var out []*[]byte
	if km.Bytes != nil {
		out = append(out, km.Bytes)
	}
	if km.TransparentSymmetricKey != nil {
		out = append(out, &km.TransparentSymmetricKey.Key)
	}
	return out
}

// wipeRequest wipes the key material and data a request carried.
func wipeRequest(req *kmip.RequestMessage) { wipeAll(requestSecrets(req)) }

// wipeResponse wipes the key material and plaintext a response carried,
// once it is written.
func wipeResponse(resp *kmip.ResponseMessage) { wipeAll(responseSecrets(resp)) }

func wipeAll(ps []*[]byte) {
	for _, p := range ps {
		secmem.Wipe(*p)
	}
}

// logItem audits the operations that change objects and logs the others
// at debug level.
func (s *Server) logItem(next kmipserver.BatchItemNext, ctx context.Context, bi *kmip.RequestBatchItem) (*kmip.ResponseBatchItem, error) {
	resp, err := next(ctx, bi)
	client, _ := ctx.Value(ctxClient{}).(string)
	result := "ok"
	if err != nil {
		result = err.Error()
	} else if resp != nil && resp.ResultStatus != kmip.ResultStatusSuccess {
		result = resp.ResultMessage
	}
	// The placeholder is the object this batch made last; a Register or
	// Create that failed made none (the library clears the placeholder
	// only after this returns).
	id := kmipserver.IdPlaceholder(ctx)
	if result != "ok" && (bi.Operation == kmip.OperationRegister || bi.Operation == kmip.OperationCreate) {
		id = ""
	}
	reason := "ok"
	if err != nil {
		reason = "GeneralFailure"
		var ke kmipserver.Error
		if errors.As(err, &ke) {
			reason = ttlv.EnumStr(ke.Reason)
		}
		var ie *internalError
		if errors.As(err, &ie) {
			s.log.Error("kmip "+ttlv.EnumStr(bi.Operation)+" failed", "client", client, "object_id", requestID(bi, id), "err", ie.err)
		}
	} else if resp != nil && resp.ResultStatus != kmip.ResultStatusSuccess {
		reason = ttlv.EnumStr(resp.ResultReason)
	}
	op := "other" // an operation byokd does not answer: no label per value a client sends
	if slices.Contains(operations, bi.Operation) {
		op = ttlv.EnumStr(bi.Operation)
	}
	s.cfg.Metrics.KMIPRequest(op, reason)
	switch bi.Operation {
	case kmip.OperationRegister, kmip.OperationCreate, kmip.OperationActivate, kmip.OperationRevoke, kmip.OperationDestroy:
		audit.Info(s.log, "kmip "+ttlv.EnumStr(bi.Operation), audit.KMIP, audit.Client(client),
			audit.ObjectID(requestID(bi, id)), audit.Result(result))
	default:
		s.log.Debug("kmip "+ttlv.EnumStr(bi.Operation), "client", client, "object_id", requestID(bi, id), "result", result)
	}
	return resp, err
}

// requestID is the object a batch item names, or the one the batch made,
// cut to 64 bytes: a client picks what it sends.
func requestID(bi *kmip.RequestBatchItem, placeholder string) string {
	id := namedID(bi, placeholder)
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return id
}

func namedID(bi *kmip.RequestBatchItem, placeholder string) string {
	switch p := bi.RequestPayload.(type) {
	case *payloads.ActivateRequestPayload:
		if p.UniqueIdentifier != "" {
			return p.UniqueIdentifier
		}
	case *payloads.RevokeRequestPayload:
		if p.UniqueIdentifier != "" {
			return p.UniqueIdentifier
		}
	case *payloads.DestroyRequestPayload:
		if p.UniqueIdentifier != "" {
			return p.UniqueIdentifier
		}
	case *payloads.GetRequestPayload:
		if p.UniqueIdentifier != "" {
			return p.UniqueIdentifier
		}
	case *payloads.GetAttributesRequestPayload:
		if p.UniqueIdentifier != "" {
			return p.UniqueIdentifier
		}
	}
	return placeholder
}
