package grpc

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/tensor"
)

// testTimeout bounds every wait in these tests; nothing sleeps.
const testTimeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// fakeHealth is a Health whose snapshot a test swaps; every swap notifies
// the subscribers, latest-value style.
type fakeHealth struct {
	mu   sync.Mutex
	snap *health.Snapshot
	subs map[int]chan struct{}
	next int
}

func newFakeHealth(snap *health.Snapshot) *fakeHealth {
	return &fakeHealth{snap: snap, subs: make(map[int]chan struct{})}
}

func (f *fakeHealth) Snapshot() *health.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeHealth) Subscribe() (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	ch := make(chan struct{}, 1)
	f.subs[id] = ch
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, id)
	}
}

func (f *fakeHealth) set(snap *health.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = snap
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *fakeHealth) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// snap builds a started, strict snapshot; each model is expected and ready
// when its flag says so.
func snap(models map[string]bool) *health.Snapshot {
	s := &health.Snapshot{Started: true, Strict: true, At: time.Unix(0, 0)}
	for _, name := range slices.Sorted(maps.Keys(models)) {
		ready := models[name]
		m := health.ModelHealth{Name: name, Version: "1", Expected: true, MinReady: 1, Ready: ready}
		if ready {
			m.State = health.ModelStateReady
		} else {
			m.State = health.ModelStateUnavailable
			m.Reason = "instance exited"
		}
		s.Models = append(s.Models, m)
	}
	return s
}

// fakeModels is a Models that records what it was asked and answers from
// func fields; Infer echoes the inputs as outputs by default.
type fakeModels struct {
	mu      sync.Mutex
	lastReq *inference.Request
	loads   []loadCall
	unloads []loadCall
	inferFn func(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// streamFn, when set, answers InferStream; otherwise InferStream
	// emits Infer's answer as the one final reply.
	streamFn func(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error
	metaErr  error
	loadErr  error
	statsArg [2]string
	readyArg []bool
}

type loadCall struct {
	name   string
	params map[string]any
}

func (f *fakeModels) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	f.lastReq = req
	fn := f.inferFn
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return echo(req), nil
}

func (f *fakeModels) InferStream(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error {
	f.mu.Lock()
	fn := f.streamFn
	f.mu.Unlock()
	if fn != nil {
		f.mu.Lock()
		f.lastReq = req
		f.mu.Unlock()
		return fn(ctx, req, emit)
	}
	resp, err := f.Infer(ctx, req)
	if err != nil {
		return err
	}
	return emit(model.Reply{Response: resp, Final: true})
}

func echo(req *inference.Request) *inference.Response {
	resp := &inference.Response{Model: req.Model, Version: "1", ID: req.ID}
	for _, in := range req.Inputs {
		out := in
		out.Name = "OUT_" + in.Name
		out.Parameters = nil
		resp.Outputs = append(resp.Outputs, out)
	}
	return resp
}

func (f *fakeModels) last() *inference.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

func (f *fakeModels) Metadata(name, version string) (*model.Metadata, error) {
	if f.metaErr != nil {
		return nil, f.metaErr
	}
	if name != "m" {
		return nil, apierr.New(apierr.NotFound, "unknown model %s", name)
	}
	return &model.Metadata{
		Name:     "m",
		Versions: []string{"1", "2"},
		Platform: "python",
		Inputs:   []model.TensorMetadata{{Name: "IN", Datatype: tensor.FP32, Shape: []int64{-1, 4}}},
		Outputs:  []model.TensorMetadata{{Name: "OUT", Datatype: tensor.Bytes, Shape: []int64{-1}}},
	}, nil
}

func (f *fakeModels) Config(name, version string) (*pb.ModelConfig, error) {
	if name != "m" {
		return nil, apierr.New(apierr.NotFound, "unknown model %s", name)
	}
	return &pb.ModelConfig{Name: "m", Backend: "python", MaxBatchSize: 8}, nil
}

func (f *fakeModels) Stats(name, version string) ([]model.Stats, error) {
	f.mu.Lock()
	f.statsArg = [2]string{name, version}
	f.mu.Unlock()
	if name == "nope" {
		return nil, apierr.New(apierr.NotFound, "unknown model %s", name)
	}
	return []model.Stats{{
		Name: "m", Version: "1",
		Counters: model.Counters{
			LastInference:  time.UnixMilli(1700000000123),
			InferenceCount: 10, ExecutionCount: 4,
			Success: model.Duration{Count: 9, Total: 9 * time.Millisecond},
			Fail:    model.Duration{Count: 1, Total: time.Microsecond},
			Queue:   model.Duration{Count: 10, Total: 2 * time.Millisecond},
		},
	}, {Name: "m", Version: "2"}}, nil
}

func (f *fakeModels) Index(_ context.Context, readyOnly bool) []model.IndexEntry {
	f.mu.Lock()
	f.readyArg = append(f.readyArg, readyOnly)
	f.mu.Unlock()
	return []model.IndexEntry{
		{Name: "m", Version: "1", State: "READY"},
		{Name: "sick", Version: "1", State: "UNAVAILABLE", Reason: "instance exited: signal killed"},
	}
}

func (f *fakeModels) Load(_ context.Context, name string, params map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = append(f.loads, loadCall{name, params})
	return f.loadErr
}

func (f *fakeModels) Unload(_ context.Context, name string, params map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unloads = append(f.unloads, loadCall{name, params})
	return f.loadErr
}

// harness is one Server on a bufconn listener with a client connection.
// Cleanup closes the client, stops the server gracefully and checks that no
// goroutine started during the test is left.
type harness struct {
	srv      *Server
	models   *fakeModels
	health   *fakeHealth
	conn     *gogrpc.ClientConn
	client   pb.GRPCInferenceServiceClient
	hc       healthpb.HealthClient
	serveErr chan error
	stopOnce sync.Once
}

func newHarness(t *testing.T, cfg Config, s *health.Snapshot) *harness {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	h := &harness{
		models:   &fakeModels{},
		health:   newFakeHealth(s),
		serveErr: make(chan error, 1),
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "vigil"
	}
	h.srv = NewServer(h.models, h.health, cfg)
	lis := bufconn.Listen(1 << 20)
	go func() { h.serveErr <- h.srv.Serve(lis) }()

	conn, err := gogrpc.NewClient("passthrough:///bufconn",
		gogrpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		gogrpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	h.conn = conn
	h.client = pb.NewGRPCInferenceServiceClient(conn)
	h.hc = healthpb.NewHealthClient(conn)

	t.Cleanup(func() {
		conn.Close()
		h.stop(t)
		goleak.VerifyNone(t, ignore)
	})
	return h
}

// stop stops the server gracefully within the test timeout and checks that
// Serve returned cleanly.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		h.srv.GracefulStop(ctx)
		if ctx.Err() != nil {
			t.Errorf("GracefulStop ran into its deadline")
		}
		if err := <-h.serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// wantCode checks that err is a gRPC status with the given code.
func wantCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != want {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), want)
	}
	return st
}

var errBoom = errors.New("boom")
