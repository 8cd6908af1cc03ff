// Package grpc serves vigil's gRPC API on one *grpc.Server: the Open
// Inference Protocol's GRPCInferenceService with Triton's extensions
// (wire-compatible with Triton's grpc_service.proto, so tritonclient.grpc
// works unchanged), grpc.health.v1.Health fed by the health engine's
// snapshot, and server reflection so grpcurl needs no proto files.
//
// Health RPCs and grpc.health.v1 read the engine's snapshot only: a probe
// never waits on a model. grpc.health.v1 services:
//
//	""          server readiness, as Triton answers it
//	"readiness" server readiness
//	"liveness"  server liveness
//	"startup"   the initial load finished (latches)
//	"model/<m>" readiness of model m's default (highest) version
//
// An unknown service is NOT_FOUND on Check and SERVICE_UNKNOWN on Watch. A
// model that disappears from the snapshot stays registered as NOT_SERVING:
// grpc-go's health server cannot unregister a service, and NOT_SERVING is
// the truthful answer for a model that is no longer served. Drain switches
// "", "readiness" and every "model/<name>" to NOT_SERVING for good, while
// "liveness" and "startup" keep following the server, as /livez does: a
// draining server is alive.
package grpc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	gogrpc "google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// Models is what the gRPC API needs from the model manager; the REST API
// uses the same shape. Errors should be *apierr.Error so they map to the
// right gRPC code.
type Models interface {
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// InferStream runs a request and passes each of its responses to emit
	// (see model.Manager.InferStream).
	InferStream(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error
	Metadata(name, version string) (*model.Metadata, error)
	Config(name, version string) (*pb.ModelConfig, error)
	// Stats returns the statistics of one version, every version of a model
	// (empty version) or every model (empty name).
	Stats(name, version string) ([]model.Stats, error)
	Index(ctx context.Context, readyOnly bool) []model.IndexEntry
	Load(ctx context.Context, name string, params map[string]any) error
	Unload(ctx context.Context, name string, params map[string]any) error
}

// Health is what the gRPC API needs from the health engine.
type Health interface {
	// Snapshot returns the current, immutable health snapshot.
	Snapshot() *health.Snapshot
	// Subscribe returns a channel that receives a value after the snapshot
	// changes (latest-value: changes may be coalesced) and a function that
	// ends the subscription.
	Subscribe() (<-chan struct{}, func())
}

// Config configures a Server.
type Config struct {
	ServerName    string
	ServerVersion string
	// Extensions are reported by ServerMetadata.
	Extensions []string
	// AdminToken, when set, guards every admin method (the repository API;
	// admin.go lists them): clients send metadata
	// "authorization: Bearer <token>".
	AdminToken string
	// HideReasons (--health-hide-reasons) withholds failure reasons from
	// the repository index when no admin token guards it.
	HideReasons bool
	// MaxRecvBytes limits the size of a received message; 0 keeps
	// grpc-go's default (4 MiB). Larger messages fail RESOURCE_EXHAUSTED.
	MaxRecvBytes int
	// SharedMemory serves the system shared memory RPCs; nil means a
	// registry with client shared memory disabled.
	SharedMemory SharedMemory
	// BodyFiles, when set, receives large ModelInferRequests, whose large
	// raw inputs then reach the stub as a descriptor of the pages they were
	// received into (files.go); nil keeps them in Go memory.
	BodyFiles *memfile.Pool
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// The transport's flow-control window and its read and write buffer
// sizes per connection (NewServer).
const (
	grpcWindow = 16 << 20
	grpcBuffer = 256 << 10
)

// Log keys.
const (
	logKeyModel   = "model"
	logKeyService = "service"
	logKeyStatus  = "status"
	logKeyErr     = "err"
)

// Server is vigil's gRPC server. Create it with NewServer, run it with
// Serve, and always end it with GracefulStop, which waits for every
// goroutine the Server started.
type Server struct {
	models Models
	health Health
	cfg    Config
	log    *slog.Logger

	srv   *gogrpc.Server
	hs    *grpchealth.Server
	codec *tensorCodec

	// stopping is cancelled when GracefulStop begins: long-lived streams
	// (health Watch, ModelStreamInfer) end so that the graceful stop does
	// not wait on idle clients.
	stopping context.Context
	stop     context.CancelFunc

	mu       sync.Mutex
	watching bool // the health watcher was started
	stopped  bool // GracefulStop was called; Serve refuses
	// wg counts the health watcher and the stream receivers, which outlive
	// their handler until grpc tears the stream down.
	wg sync.WaitGroup

	statusMu sync.Mutex
	drained  bool
	statuses map[string]healthpb.HealthCheckResponse_ServingStatus // as last set
}

// NewServer builds the gRPC server with the inference service,
// grpc.health.v1 (statuses computed from h's current snapshot) and
// reflection. It starts nothing; Serve does.
func NewServer(m Models, h Health, cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SharedMemory == nil {
		cfg.SharedMemory = sharedmemory.New(sharedmemory.Config{})
	}
	stopping, stop := context.WithCancel(context.Background())
	s := &Server{
		models:   m,
		health:   h,
		cfg:      cfg,
		log:      log,
		hs:       grpchealth.NewServer(),
		stopping: stopping,
		stop:     stop,
		statuses: make(map[string]healthpb.HealthCheckResponse_ServingStatus),
		codec:    newTensorCodec(cfg.BodyFiles),
	}
	opts := []gogrpc.ServerOption{
		gogrpc.ChainUnaryInterceptor(recoverUnary(log), s.adminUnary()),
		gogrpc.ChainStreamInterceptor(recoverStream(log), s.adminStream()),
		// Large raw tensor contents are neither copied out of requests nor
		// into responses (codec.go).
		gogrpc.ForceServerCodecV2(s.codec),
		// A large tensor crosses without waiting for window updates
		// (grpc-go otherwise starts at 64 KiB and grows the window by BDP
		// pings), in 256 KiB reads and writes instead of 32 KiB; what it
		// gains and costs is in docs/architecture.md.
		gogrpc.InitialWindowSize(grpcWindow),
		gogrpc.InitialConnWindowSize(grpcWindow),
		gogrpc.ReadBufferSize(grpcBuffer),
		gogrpc.WriteBufferSize(grpcBuffer),
	}
	if cfg.MaxRecvBytes > 0 {
		opts = append(opts, gogrpc.MaxRecvMsgSize(cfg.MaxRecvBytes))
	}
	s.srv = gogrpc.NewServer(opts...)
	pb.RegisterGRPCInferenceServiceServer(s.srv, &inferenceService{s: s})
	healthpb.RegisterHealthServer(s.srv, &healthService{Server: s.hs, stopping: stopping, statuses: s.statusList})
	reflection.Register(s.srv)
	s.syncHealth()
	return s
}

// Serve accepts connections on lis until GracefulStop. The first call also
// starts the goroutine that keeps grpc.health.v1 in step with the health
// engine. Serve may be called for several listeners.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		lis.Close()
		return gogrpc.ErrServerStopped
	}
	if !s.watching {
		s.watching = true
		s.wg.Add(1)
		go s.watchHealth()
	}
	s.mu.Unlock()

	if err := s.srv.Serve(lis); err != nil {
		return fmt.Errorf("grpc serve on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Drain sets the readiness services ("", "readiness", "model/<name>") to
// NOT_SERVING for good (nothing resumes them; later snapshot changes are
// ignored for them) and makes ServerReady answer false; liveness and startup
// are unaffected. Inference keeps being served: shutdown calls Drain first,
// then GracefulStop after the drain delay.
func (s *Server) Drain() {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	if s.drained {
		return
	}
	s.drained = true
	s.syncHealthLocked()
	s.log.Info("grpc health draining: readiness and every model NOT_SERVING; liveness unchanged")
}

func (s *Server) isDrained() bool {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	return s.drained
}

// GracefulStop drains health, stops accepting connections, ends idle
// streams, and waits for in-flight RPCs to finish; when ctx ends first it
// stops the server hard (cancelling what is still running). It then waits
// for every goroutine the Server started. It is safe to call more than once.
func (s *Server) GracefulStop(ctx context.Context) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()

	s.Drain()
	s.stop()

	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.GracefulStop()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grpc graceful stop timed out, closing open RPCs", logKeyErr, context.Cause(ctx))
		s.srv.Stop()
		<-done
	}
	s.wg.Wait()
}

// snapshot returns the current health snapshot; before the engine published
// one, an empty snapshot (live, not started, not ready).
func (s *Server) snapshot() *health.Snapshot {
	if snap := s.health.Snapshot(); snap != nil {
		return snap
	}
	return &health.Snapshot{}
}
