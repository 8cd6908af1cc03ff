package grpc

import (
	"context"
	"maps"

	"google.golang.org/grpc/codes"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/health"
)

// The grpc.health.v1 service names besides "" (server readiness).
const (
	ServiceLiveness  = "liveness"
	ServiceReadiness = "readiness"
	ServiceStartup   = "startup"
	// ServiceModelPrefix followed by a model name is that model's readiness.
	ServiceModelPrefix = "model/"
)

// watchHealth keeps grpc.health.v1 in step with the health engine until
// GracefulStop. Subscribing before the first sync means no change between
// NewServer and now is missed.
func (s *Server) watchHealth() {
	defer s.wg.Done()
	changed, unsubscribe := s.health.Subscribe()
	defer unsubscribe()
	s.syncHealth()
	for {
		select {
		case <-s.stopping.Done():
			return
		case _, ok := <-changed:
			if !ok {
				return
			}
			s.syncHealth()
		}
	}
}

// syncHealth recomputes every service's status from the current snapshot and
// sets those that changed, so Watch streams see each change once.
func (s *Server) syncHealth() {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	s.syncHealthLocked()
}

// syncHealthLocked is syncHealth with s.statusMu held.
func (s *Server) syncHealthLocked() {
	// Every status is derived from the snapshot alone (draining included:
	// the snapshot says so), as every HTTP surface is.
	want := servingStatuses(s.snapshot())
	for svc, st := range want {
		if old, ok := s.statuses[svc]; ok && old == st {
			continue
		}
		s.setStatusLocked(svc, st)
	}
	// A model gone from the snapshot cannot be unregistered from grpc-go's
	// health server; it is no longer served, so it reads NOT_SERVING.
	for svc, old := range s.statuses {
		if _, ok := want[svc]; !ok && old != healthpb.HealthCheckResponse_NOT_SERVING {
			s.setStatusLocked(svc, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}

// setStatusLocked sets one service's status; s.statusMu must be held.
func (s *Server) setStatusLocked(svc string, st healthpb.HealthCheckResponse_ServingStatus) {
	s.hs.SetServingStatus(svc, st)
	s.statuses[svc] = st
	s.log.Debug("grpc health status", logKeyService, svc, logKeyStatus, st.String())
}

// servingStatuses maps a snapshot to every grpc.health.v1 service's status.
func servingStatuses(snap *health.Snapshot) map[string]healthpb.HealthCheckResponse_ServingStatus {
	ready, _ := snap.Ready()
	live, _ := snap.Live()
	out := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":               servingStatus(ready),
		ServiceReadiness: servingStatus(ready),
		ServiceLiveness:  servingStatus(live),
		ServiceStartup:   servingStatus(snap.Started),
	}
	for _, m := range snap.Models {
		svc := ServiceModelPrefix + m.Name
		if _, done := out[svc]; done {
			continue
		}
		// The same answer as ModelReady and the REST ready endpoint without
		// a version: the model's highest version.
		r, _, _ := snap.ModelReady(m.Name, "")
		out[svc] = servingStatus(r)
	}
	return out
}

func servingStatus(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// healthService is grpc-go's health server (Check, List, Watch) with Watch
// streams ended when the server stops, so that a watching client does not
// hold up GracefulStop; the client sees UNAVAILABLE and retries elsewhere.
type healthService struct {
	*grpchealth.Server
	stopping context.Context
	statuses func() map[string]healthpb.HealthCheckResponse_ServingStatus
}

// MaxListServices bounds grpc.health.v1 List: a server with more services
// (one per model, plus four) answers RESOURCE_EXHAUSTED saying so; Check
// and Watch answer for any one service. grpc-go's own List stops at 100.
const MaxListServices = 10000

// List implements grpc.health.v1.Health: every service and its status, as
// Check would answer it.
func (h *healthService) List(_ context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	st := h.statuses()
	if len(st) > MaxListServices {
		return nil, status.Errorf(codes.ResourceExhausted,
			"%d health services are more than List answers (%d); ask for one with Check or Watch (service \"model/<name>\")", len(st), MaxListServices)
	}
	out := &healthpb.HealthListResponse{Statuses: make(map[string]*healthpb.HealthCheckResponse, len(st))}
	for svc, s := range st {
		out.Statuses[svc] = &healthpb.HealthCheckResponse{Status: s}
	}
	return out, nil
}

// statusList copies the statuses last set.
func (s *Server) statusList() map[string]healthpb.HealthCheckResponse_ServingStatus {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	return maps.Clone(s.statuses)
}

// Watch implements grpc.health.v1.Health.
func (h *healthService) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(h.stopping, cancel)
	defer stop()
	err := h.Server.Watch(in, &watchStream{Health_WatchServer: stream, ctx: ctx})
	if h.stopping.Err() != nil {
		return status.Error(codes.Unavailable, "server is shutting down")
	}
	return err
}

// watchStream overrides a Watch stream's context.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }
