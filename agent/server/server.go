// SPDX-License-Identifier: Apache-2.0

// Package server serves byokd's key provider (byokd.keyprovider.v1) and
// grpc.health.v1 on a unix socket, to callers allowed by SO_PEERCRED.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/keymgr"
	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/agent/metrics"
	"github.com/byokd/byokd/agent/wdek"
	"github.com/byokd/byokd/client/keyprovider"
	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	pb "github.com/byokd/byokd/proto/byokd/keyprovider/v1"
)

// Limits of a request: the protocol's, which clients share.
const (
	MaxPlaintext = pb.MaxPlaintext
	MaxAAD       = pb.MaxAAD
	maxMsg       = pb.MaxMessage
)

// Deriver computes data keys from the sealed DEK; crypto/seal's sealers do.
type Deriver interface {
	Derive(ctx context.Context, info []byte, out []byte) error
}

// Config sets up a server.
type Config struct {
	ClusterID string
	Keys      Deriver
	Machine   *lock.Machine
	Policy    Policy
	Release   bool // GetDataKey allowed
	Strict    bool // Encrypt/Decrypt allowed
	Log       *slog.Logger
	Metrics   *metrics.Metrics
	// Reseal, when set, is called when the sealer says its sealed key is
	// void (seal.ErrReseal): the key manager unwraps and seals again.
	Reseal func()
	// Admin carries out the operator actions AcceptKey and ForgetKey;
	// without it they answer UNIMPLEMENTED.
	Admin Admin
}

// Admin is what the operator actions ask of the key manager
// (*keymgr.Manager).
type Admin interface {
	AcceptKey(ctx context.Context, who keymgr.Operator, current, offered string) (*wdek.KeyIdentity, error)
	ForgetKey(ctx context.Context, who keymgr.Operator, current string) error
}

// adminMethods may be called only by root and byokd's own user, whatever
// the allow-list says: the database's user must not be able to make byokd
// serve another key.
var adminMethods = map[string]bool{"AcceptKey": true, "ForgetKey": true}

// Server is the key provider.
type Server struct {
	pb.UnimplementedKeyProviderServiceServer
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	stop   context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
}

// HealthService is the name grpc.health.v1 reports the key provider under.
const HealthService = "byokd.keyprovider.v1.KeyProviderService"

// New builds the gRPC server; Serve starts it on a listener.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, health: health.NewServer(), ctx: ctx, stop: cancel}
	s.grpc = grpc.NewServer(
		grpc.Creds(peerCreds{}),
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.unaryGuard),
		grpc.ChainStreamInterceptor(s.streamGuard),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
	)
	pb.RegisterKeyProviderServiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.setHealth(cfg.Machine.Status().State)
	sub := cfg.Machine.Subscribe()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer sub.Cancel()
		for {
			select {
			case st, ok := <-sub.C:
				if !ok {
					sub = cfg.Machine.Subscribe()
					continue
				}
				s.setHealth(st.State)
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

func (s *Server) setHealth(st lock.State) {
	v := healthpb.HealthCheckResponse_NOT_SERVING
	if st.Serving() {
		v = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", v)
	s.health.SetServingStatus(HealthService, v)
}

// Serve answers on l until Stop.
func (s *Server) Serve(l net.Listener) error {
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop ends Watch streams, lets calls in flight finish for up to ctx, then
// closes every connection.
func (s *Server) Stop(ctx context.Context) {
	s.stop()
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	s.wg.Wait()
}

func (s *Server) guard(ctx context.Context, method string) error {
	p, ok := peerOf(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "caller credentials unknown")
	}
	why := s.cfg.Policy.check(p)
	if adminMethods[method] {
		why = ""
		if p.UID != 0 && p.UID != uint32(os.Geteuid()) {
			why = "operator actions are for root and byokd's own user"
		}
	}
	if why != "" {
		audit.Warn(s.cfg.Log, "refused caller", audit.Refuse, audit.Method(method),
			audit.UID(p.UID), audit.GID(p.GID), audit.PID(p.PID), audit.Groups(p.Groups), audit.Reason(why))
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Refused(why)
		}
		return status.Error(codes.PermissionDenied, "caller not allowed: "+why)
	}
	return nil
}

func shortMethod(full string) string {
	return full[strings.LastIndex(full, "/")+1:]
}

func (s *Server) observe(method string, err error) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ProviderCall(method, status.Code(err).String())
	}
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	m := shortMethod(info.FullMethod)
	defer func() {
		if r := recover(); r != nil {
			// Never crash on a request; never echo what was in it.
			s.cfg.Log.Error("panic in key provider call", "method", m)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		s.observe(m, err)
	}()
	if err := s.guard(ctx, m); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		// A caller without a deadline still gets an answer in bounded time.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	return h(ctx, req)
}

// callTimeout bounds a unary call whose caller set no deadline.
const callTimeout = 30 * time.Second

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	m := shortMethod(info.FullMethod)
	defer func() { s.observe(m, err) }()
	if err := s.guard(ss.Context(), m); err != nil {
		return err
	}
	return h(srv, ss)
}

// ValidKeyID checks a key id: 1 to 255 bytes of printable ASCII.
func ValidKeyID(id string) error {
	if len(id) == 0 || len(id) > block.MaxKeyID {
		return fmt.Errorf("key_id must be 1 to %d bytes, got %d", block.MaxKeyID, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return fmt.Errorf("key_id must be printable ASCII; byte %d is 0x%02x", i, id[i])
		}
	}
	return nil
}

// dataKey derives the key id's data key into out, or says why it cannot.
func (s *Server) dataKey(ctx context.Context, keyID string, out []byte) (uint32, string, error) {
	if err := ValidKeyID(keyID); err != nil {
		return 0, "", status.Error(codes.InvalidArgument, err.Error())
	}
	st := s.cfg.Machine.Status()
	if !st.State.Serving() {
		return 0, "", status.Error(codes.FailedPrecondition, "node "+strings.ToLower(st.State.String())+": "+st.Reason)
	}
	info, err := datakey.Info(s.cfg.ClusterID, keyID)
	if err != nil {
		return 0, "", status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.cfg.Keys.Derive(ctx, info, out); err != nil {
		if errors.Is(err, seal.ErrReseal) {
			if s.cfg.Reseal != nil {
				s.cfg.Reseal()
			}
			return 0, "", status.Error(codes.Unavailable, "the sealed key is being re-derived; retry")
		}
		if errors.Is(err, seal.ErrWiped) {
			// Locked between the state check and the derivation.
			st := s.cfg.Machine.Status()
			return 0, "", status.Error(codes.FailedPrecondition, "node "+strings.ToLower(st.State.String())+": "+st.Reason)
		}
		s.cfg.Log.Error("derive data key", "err", err)
		return 0, "", status.Error(codes.Unavailable, "sealer failed")
	}
	switch now := s.cfg.Machine.Status(); {
	case !now.State.Serving():
		// The node locked while the sealer worked (a TPM that hung
		// through the lock): the key is not handed out.
		clear(out)
		return 0, "", status.Error(codes.FailedPrecondition, "node "+strings.ToLower(now.State.String())+": "+now.Reason)
	case now.Fingerprint != st.Fingerprint:
		// The node locked and took another key while the key was
		// derived: never label a key with another key's name.
		clear(out)
		return 0, "", status.Error(codes.Unavailable, "the node's key changed during the call; retry")
	}
	return st.Generation, st.Fingerprint, nil
}

// GetDataKey implements release mode.
func (s *Server) GetDataKey(ctx context.Context, req *pb.GetDataKeyRequest) (*pb.GetDataKeyResponse, error) {
	if !s.cfg.Release {
		return nil, status.Error(codes.PermissionDenied, "release mode is not enabled in byokd's config")
	}
	key := make([]byte, block.KeySize)
	gen, fp, err := s.dataKey(ctx, req.GetKeyId(), key)
	if err != nil {
		return nil, err
	}
	// The response owns key until gRPC has marshalled it; it cannot be
	// wiped here without racing the transport.
	return &pb.GetDataKeyResponse{Key: key, Generation: gen, KeyFingerprint: fp}, nil
}

// Encrypt implements strict mode.
func (s *Server) Encrypt(ctx context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	if !s.cfg.Strict {
		return nil, status.Error(codes.PermissionDenied, "strict mode is not enabled in byokd's config")
	}
	if len(req.GetPlaintext()) > MaxPlaintext || len(req.GetAad()) > MaxAAD {
		return nil, status.Errorf(codes.InvalidArgument, "plaintext must be at most %d bytes and aad at most %d", MaxPlaintext, MaxAAD)
	}
	var key [block.KeySize]byte
	defer clear(key[:])
	gen, _, err := s.dataKey(ctx, req.GetKeyId(), key[:])
	if err != nil {
		return nil, err
	}
	blk, err := block.Seal(nil, key[:], gen, req.GetKeyId(), req.GetPlaintext(), req.GetAad())
	if err != nil {
		return nil, status.Error(codes.Internal, "seal block")
	}
	return &pb.EncryptResponse{Ciphertext: blk}, nil
}

// Decrypt implements strict mode.
func (s *Server) Decrypt(ctx context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	if !s.cfg.Strict {
		return nil, status.Error(codes.PermissionDenied, "strict mode is not enabled in byokd's config")
	}
	if len(req.GetCiphertext()) > MaxPlaintext+block.Overhead || len(req.GetAad()) > MaxAAD {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext must be at most %d bytes and aad at most %d", MaxPlaintext+block.Overhead, MaxAAD)
	}
	var key [block.KeySize]byte
	defer clear(key[:])
	if _, _, err := s.dataKey(ctx, req.GetKeyId(), key[:]); err != nil {
		return nil, err
	}
	pt, err := block.Open(nil, key[:], req.GetKeyId(), req.GetCiphertext(), req.GetAad())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "block does not open: malformed, tampered with, or sealed for another key id or aad")
	}
	return &pb.DecryptResponse{Plaintext: pt}, nil
}

// Status reports the lock state.
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	return s.statusProto(s.cfg.Machine.Status()), nil
}

// AcceptKey implements the operator's acceptance of another key.
func (s *Server) AcceptKey(ctx context.Context, req *pb.AcceptKeyRequest) (*pb.AcceptKeyResponse, error) {
	if s.cfg.Admin == nil {
		return nil, status.Error(codes.Unimplemented, "no key manager")
	}
	id, err := s.cfg.Admin.AcceptKey(ctx, operator(ctx), req.GetCurrentFingerprint(), req.GetOfferedFingerprint())
	if err != nil {
		return nil, adminStatus(err)
	}
	return &pb.AcceptKeyResponse{KeyFingerprint: id.Short(), Generation: id.Generation}, nil
}

// ForgetKey implements the operator's giving up of the node's key.
func (s *Server) ForgetKey(ctx context.Context, req *pb.ForgetKeyRequest) (*pb.ForgetKeyResponse, error) {
	if s.cfg.Admin == nil {
		return nil, status.Error(codes.Unimplemented, "no key manager")
	}
	if err := s.cfg.Admin.ForgetKey(ctx, operator(ctx), req.GetCurrentFingerprint()); err != nil {
		return nil, adminStatus(err)
	}
	return &pb.ForgetKeyResponse{}, nil
}

func operator(ctx context.Context) keymgr.Operator {
	p, _ := peerOf(ctx)
	return keymgr.Operator{UID: int(p.UID), PID: int(p.PID)}
}

func adminStatus(err error) error {
	switch {
	case errors.Is(err, keymgr.ErrMismatch):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, keymgr.ErrNotApplicable):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// Watch streams the lock state.
func (s *Server) Watch(_ *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchResponse]) error {
	sub := s.cfg.Machine.Subscribe()
	defer sub.Cancel()
	for {
		select {
		case st, ok := <-sub.C:
			if !ok {
				return status.Error(codes.Unavailable, "watch fell behind; reconnect")
			}
			if err := stream.Send(&pb.WatchResponse{Status: s.statusProto(st)}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "byokd is shutting down")
		}
	}
}

var stateProto = map[lock.State]pb.State{
	lock.Starting: pb.State_STATE_STARTING,
	lock.Unlocked: pb.State_STATE_UNLOCKED,
	lock.Degraded: pb.State_STATE_DEGRADED,
	lock.Locked:   pb.State_STATE_LOCKED,
}

func (s *Server) statusProto(st lock.Status) *pb.StatusResponse {
	r := &pb.StatusResponse{
		State:              stateProto[st.State],
		Reason:             st.Reason,
		RootKeyId:          st.RootKeyID,
		KeyVersion:         st.KeyVersion,
		Sealer:             st.Sealer,
		Warnings:           slices.Clone(st.Warnings),
		Generation:         st.Generation,
		KeyFingerprint:     st.Fingerprint,
		Cause:              st.Cause,
		OperatorAction:     st.Action,
		OfferedFingerprint: st.Offered,
		WipeError:          st.WipeError,
	}
	if !st.LastCheck.IsZero() {
		r.LastCheck = timestamppb.New(st.LastCheck)
	}
	if s.cfg.Release {
		r.Modes = append(r.Modes, string(keyprovider.Release))
	}
	if s.cfg.Strict {
		r.Modes = append(r.Modes, string(keyprovider.Strict))
	}
	return r
}
