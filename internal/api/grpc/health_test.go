package grpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
	unknownSvc = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
)

func TestHealthCheck(t *testing.T) {
	s := snap(map[string]bool{"good": true, "bad": false})
	h := newHarness(t, Config{}, s)
	ctx := testCtx(t)
	for svc, want := range map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":           notServing, // strict readiness: "bad" is expected and not ready
		"readiness":  notServing,
		"liveness":   serving,
		"startup":    serving,
		"model/good": serving,
		"model/bad":  notServing,
	} {
		got, err := h.hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		if got.GetStatus() != want {
			t.Errorf("Check(%q) = %v, want %v", svc, got.GetStatus(), want)
		}
	}
	for _, svc := range []string{"model/nope", "inference.GRPCInferenceService", "ready"} {
		_, err := h.hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		wantCode(t, err, codes.NotFound)
	}
}

func TestHealthList(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"a": true, "b": true}))
	got, err := h.hc.List(testCtx(t), &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"", "liveness", "model/a", "model/b", "readiness", "startup"}
	var names []string
	for name, st := range got.GetStatuses() {
		names = append(names, name)
		if st.GetStatus() != serving {
			t.Errorf("List: %q is %v", name, st.GetStatus())
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("List services = %q, want %q", names, want)
	}
}

// List answers for more than grpc-go's 100 services: one per model.
func TestHealthListWithManyModels(t *testing.T) {
	models := map[string]bool{}
	for i := range 150 {
		models[fmt.Sprintf("m%03d", i)] = i%2 == 0
	}
	h := newHarness(t, Config{}, snap(models))
	got, err := h.hc.List(testCtx(t), &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatalf("List with 154 services: %v", err)
	}
	if n := len(got.GetStatuses()); n != 154 {
		t.Fatalf("List has %d services, want 154", n)
	}
	if st := got.GetStatuses()["model/m001"].GetStatus(); st != notServing {
		t.Errorf("model/m001 is %v, want NOT_SERVING", st)
	}
}

// recvStatus waits (bounded by the stream's deadline) for the next status.
func recvStatus(t *testing.T, w healthpb.Health_WatchClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("watch recv: %v", err)
	}
	return resp.GetStatus()
}

func TestHealthWatchFollowsSnapshot(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	server, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	mdl, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "model/m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []healthpb.Health_WatchClient{server, mdl} {
		if got := recvStatus(t, w); got != serving {
			t.Fatalf("initial status %v, want SERVING", got)
		}
	}

	for _, step := range []struct {
		ready bool
		want  healthpb.HealthCheckResponse_ServingStatus
	}{{false, notServing}, {true, serving}, {false, notServing}} {
		h.health.set(snap(map[string]bool{"m": step.ready}))
		for _, w := range []healthpb.Health_WatchClient{server, mdl} {
			if got := recvStatus(t, w); got != step.want {
				t.Fatalf("after model ready=%v: status %v, want %v", step.ready, got, step.want)
			}
		}
	}
}

func TestHealthWatchUnknownModelAppearsAndDisappears(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	w, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "model/new"})
	if err != nil {
		t.Fatal(err)
	}
	if got := recvStatus(t, w); got != unknownSvc {
		t.Fatalf("unknown service: %v, want SERVICE_UNKNOWN", got)
	}
	h.health.set(snap(map[string]bool{"m": true, "new": true}))
	if got := recvStatus(t, w); got != serving {
		t.Fatalf("after the model appeared: %v, want SERVING", got)
	}
	// Gone from the snapshot: NOT_SERVING, and it stays a known service.
	h.health.set(snap(map[string]bool{"m": true}))
	if got := recvStatus(t, w); got != notServing {
		t.Fatalf("after the model disappeared: %v, want NOT_SERVING", got)
	}
	got, err := h.hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "model/new"})
	if err != nil || got.GetStatus() != notServing {
		t.Fatalf("Check(model/new) = %v, %v; want NOT_SERVING", got, err)
	}
}

func TestHealthStartupAndLiveness(t *testing.T) {
	loading := snap(nil)
	loading.Started = false
	loading.Loading = "loading 1/2: m"
	h := newHarness(t, Config{}, loading)
	ctx := testCtx(t)
	startup, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "startup"})
	if err != nil {
		t.Fatal(err)
	}
	liveness, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "liveness"})
	if err != nil {
		t.Fatal(err)
	}
	if got := recvStatus(t, startup); got != notServing {
		t.Fatalf("startup while loading: %v", got)
	}
	if got := recvStatus(t, liveness); got != serving {
		t.Fatalf("liveness while loading: %v", got)
	}
	stalled := snap(map[string]bool{"m": true})
	stalled.WatchdogStalled = true
	h.health.set(stalled)
	if got := recvStatus(t, startup); got != serving {
		t.Fatalf("startup after load: %v", got)
	}
	if got := recvStatus(t, liveness); got != notServing {
		t.Fatalf("liveness with a stalled watchdog: %v", got)
	}
}

func TestDrain(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	w, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	if got := recvStatus(t, w); got != serving {
		t.Fatalf("before drain: %v", got)
	}

	draining := func(models map[string]bool) *health.Snapshot {
		s := snap(models)
		s.Draining = true
		return s
	}
	h.health.set(draining(map[string]bool{"m": true}))
	if got := recvStatus(t, w); got != notServing {
		t.Fatalf("after drain: %v", got)
	}
	services := []string{"", "readiness", "model/m"}
	checkAll := func(when string) {
		t.Helper()
		for _, svc := range services {
			got, err := h.hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || got.GetStatus() != notServing {
				t.Fatalf("%s: Check(%q) = %v, %v; want NOT_SERVING", when, svc, got, err)
			}
		}
		// Liveness (and the latched startup) stay true while draining.
		for _, svc := range []string{"liveness", "startup"} {
			got, err := h.hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || got.GetStatus() != serving {
				t.Fatalf("%s: Check(%q) = %v, %v; want SERVING", when, svc, got, err)
			}
		}
		ready, err := h.client.ServerReady(ctx, &pb.ServerReadyRequest{})
		if err != nil || ready.GetReady() {
			t.Fatalf("%s: ServerReady = %v, %v; want false", when, ready, err)
		}
		mr, err := h.client.ModelReady(ctx, &pb.ModelReadyRequest{Name: "m"})
		if err != nil || mr.GetReady() {
			t.Fatalf("%s: ModelReady = %v, %v; want false, as grpc.health model/m", when, mr, err)
		}
	}
	checkAll("after drain")

	// A later snapshot change keeps the drain (the engine latches it).
	// syncHealth is what the watcher runs on a change; calling it directly
	// makes the check deterministic.
	h.health.set(draining(map[string]bool{"m": true, "n": true}))
	h.srv.syncHealth()
	h.srv.Drain()
	checkAll("after a ready snapshot")

	// Inference keeps being served while draining.
	if _, err := h.client.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m"}); err != nil {
		t.Fatalf("infer while draining: %v", err)
	}
}

func TestReflection(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	ctx := testCtx(t)
	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %q, missing %q", names, want)
		}
	}

	// grpcurl resolves the service's file, including model_config.proto.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "inference.GRPCInferenceService"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatal(err)
		}
		files = append(files, fd.GetName())
	}
	for _, want := range []string{"grpc_service.proto", "model_config.proto"} {
		if !slices.Contains(files, want) {
			t.Errorf("reflection files %q, missing %q", files, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// GracefulStop ends idle Watch and ModelStreamInfer streams (so it does not
// wait for idle clients), still answers the stream request in flight, and
// leaves no goroutine behind (the harness checks).
func TestGracefulStopEndsStreams(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	started := make(chan struct{})
	release := make(chan struct{})
	h.models.inferFn = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return echo(req), nil
	}
	ctx := testCtx(t)
	w, err := h.hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
	if err != nil {
		t.Fatal(err)
	}
	if got := recvStatus(t, w); got != serving {
		t.Fatalf("initial: %v", got)
	}
	idle, err := h.client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := h.client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Send(&pb.ModelInferRequest{ModelName: "m", Id: "inflight"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the stream request never reached the model")
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.stop(t)
	}()

	// Watch sees the drain, then the stream ends UNAVAILABLE.
	for {
		resp, err := w.Recv()
		if err != nil {
			wantCode(t, err, codes.Unavailable)
			break
		}
		if resp.GetStatus() != notServing {
			t.Fatalf("watch during stop: %v", resp.GetStatus())
		}
	}
	_, err = idle.Recv()
	wantCode(t, err, codes.Unavailable)

	close(release)
	resp, err := busy.Recv()
	if err != nil || resp.GetInferResponse().GetId() != "inflight" {
		t.Fatalf("in-flight stream request: %v, %v", resp, err)
	}
	_, err = busy.Recv()
	wantCode(t, err, codes.Unavailable)

	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("GracefulStop did not return")
	}
	if n := h.health.subscribers(); n != 0 {
		t.Errorf("%d health subscriptions left after GracefulStop", n)
	}

	// A stopped server does not serve again.
	if err := h.srv.Serve(bufconn.Listen(1024)); !errors.Is(err, gogrpc.ErrServerStopped) {
		t.Errorf("Serve after GracefulStop = %v, want ErrServerStopped", err)
	}
}

// When ctx ends before the in-flight RPCs, GracefulStop stops hard: the
// RPC's context is cancelled and GracefulStop returns.
func TestGracefulStopDeadline(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	started := make(chan struct{})
	h.models.inferFn = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		close(started)
		<-ctx.Done() // a model that never finishes on its own
		return nil, ctx.Err()
	}
	ctx := testCtx(t)
	inferErr := make(chan error, 1)
	go func() {
		_, err := h.client.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m"})
		inferErr <- err
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the request never reached the model")
	}

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	h.srv.GracefulStop(expired)

	select {
	case err := <-inferErr:
		if status.Code(err) == codes.OK {
			t.Fatalf("infer cut by a hard stop succeeded")
		}
	case <-ctx.Done():
		t.Fatal("the in-flight RPC did not end")
	}
}
