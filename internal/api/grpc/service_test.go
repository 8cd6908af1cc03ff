package grpc

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestServerLiveAndReady(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)

	live, err := h.client.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || !live.GetLive() {
		t.Fatalf("ServerLive = %v, %v; want live", live, err)
	}
	ready, err := h.client.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || !ready.GetReady() {
		t.Fatalf("ServerReady = %v, %v; want ready", ready, err)
	}

	// Not ready and not live are answers, not errors.
	down := snap(map[string]bool{"m": false})
	down.WatchdogStalled = true
	h.health.set(down)
	live, err = h.client.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || live.GetLive() {
		t.Fatalf("ServerLive = %v, %v; want OK with live=false", live, err)
	}
	ready, err = h.client.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || ready.GetReady() {
		t.Fatalf("ServerReady = %v, %v; want OK with ready=false", ready, err)
	}
}

func TestNilSnapshotIsLiveNotReady(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	ctx := testCtx(t)
	live, err := h.client.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || !live.GetLive() {
		t.Fatalf("ServerLive = %v, %v; want live", live, err)
	}
	ready, err := h.client.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || ready.GetReady() {
		t.Fatalf("ServerReady = %v, %v; want not ready", ready, err)
	}
}

func TestModelReady(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"good": true, "bad": false}))
	ctx := testCtx(t)

	for _, tc := range []struct {
		name, version string
		want          bool
		code          codes.Code
	}{
		{name: "good", want: true},
		{name: "good", version: "1", want: true},
		{name: "bad", want: false},
		{name: "nope", code: codes.NotFound},
		{name: "good", version: "7", code: codes.NotFound},
		{name: "", code: codes.InvalidArgument},
	} {
		resp, err := h.client.ModelReady(ctx, &pb.ModelReadyRequest{Name: tc.name, Version: tc.version})
		if tc.code != codes.OK {
			st := wantCode(t, err, tc.code)
			if tc.name != "" && !strings.Contains(st.Message(), tc.name) {
				t.Errorf("ModelReady(%q, %q) message %q does not name the model", tc.name, tc.version, st.Message())
			}
			continue
		}
		if err != nil {
			t.Fatalf("ModelReady(%q, %q): %v", tc.name, tc.version, err)
		}
		if resp.GetReady() != tc.want {
			t.Errorf("ModelReady(%q, %q) = %v, want %v", tc.name, tc.version, resp.GetReady(), tc.want)
		}
	}
}

func TestServerMetadata(t *testing.T) {
	h := newHarness(t, Config{ServerName: "vigil", ServerVersion: "0.1.0", Extensions: []string{"model_repository", "statistics"}}, snap(nil))
	got, err := h.client.ServerMetadata(testCtx(t), &pb.ServerMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.ServerMetadataResponse{Name: "vigil", Version: "0.1.0", Extensions: []string{"model_repository", "statistics"}}
	if !proto.Equal(got, want) {
		t.Errorf("ServerMetadata = %v, want %v", got, want)
	}
}

func TestModelMetadata(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	ctx := testCtx(t)
	got, err := h.client.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.ModelMetadataResponse{
		Name: "m", Versions: []string{"1", "2"}, Platform: "python",
		Inputs:  []*pb.ModelMetadataResponse_TensorMetadata{{Name: "IN", Datatype: "FP32", Shape: []int64{-1, 4}}},
		Outputs: []*pb.ModelMetadataResponse_TensorMetadata{{Name: "OUT", Datatype: "BYTES", Shape: []int64{-1}}},
	}
	if !proto.Equal(got, want) {
		t.Errorf("ModelMetadata = %v, want %v", got, want)
	}

	_, err = h.client.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"})
	st := wantCode(t, err, codes.NotFound)
	if !strings.Contains(st.Message(), "nope") {
		t.Errorf("message %q does not name the model", st.Message())
	}
}

func TestModelConfig(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	ctx := testCtx(t)
	got, err := h.client.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (&pb.ModelConfig{Name: "m", Backend: "python", MaxBatchSize: 8}); !proto.Equal(got.GetConfig(), want) {
		t.Errorf("ModelConfig = %v, want %v", got.GetConfig(), want)
	}
	_, err = h.client.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound)
}

func TestModelStatistics(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	ctx := testCtx(t)
	got, err := h.client.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "m", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if h.models.statsArg != [2]string{"m", "1"} {
		t.Errorf("Stats called with %v", h.models.statsArg)
	}
	if len(got.GetModelStats()) != 2 {
		t.Fatalf("got %d model stats, want 2", len(got.GetModelStats()))
	}
	zero := &pb.StatisticDuration{}
	want := &pb.ModelStatistics{
		Name: "m", Version: "1", LastInference: 1700000000123, InferenceCount: 10, ExecutionCount: 4,
		InferenceStats: &pb.InferStatistics{
			Success:      &pb.StatisticDuration{Count: 9, Ns: 9_000_000},
			Fail:         &pb.StatisticDuration{Count: 1, Ns: 1_000},
			Queue:        &pb.StatisticDuration{Count: 10, Ns: 2_000_000},
			ComputeInput: zero, ComputeInfer: zero, ComputeOutput: zero, CacheHit: zero, CacheMiss: zero,
		},
	}
	if !proto.Equal(got.GetModelStats()[0], want) {
		t.Errorf("stats[0] = %v\nwant %v", got.GetModelStats()[0], want)
	}
	if last := got.GetModelStats()[1].GetLastInference(); last != 0 {
		t.Errorf("never-run version has last_inference %d, want 0", last)
	}

	_, err = h.client.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound)
}

func TestRepositoryIndex(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	ctx := testCtx(t)
	got, err := h.client.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{Ready: true})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.RepositoryIndexResponse{Models: []*pb.RepositoryIndexResponse_ModelIndex{
		{Name: "m", Version: "1", State: "READY"},
		{Name: "sick", Version: "1", State: "UNAVAILABLE", Reason: "instance exited: signal killed"},
	}}
	if !proto.Equal(got, want) {
		t.Errorf("RepositoryIndex = %v, want %v", got, want)
	}
	if _, err := h.client.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h.models.readyArg, []bool{true, false}) {
		t.Errorf("Index readyOnly args = %v, want [true false]", h.models.readyArg)
	}
}

func TestRepositoryLoadUnloadAuth(t *testing.T) {
	h := newHarness(t, Config{AdminToken: "s3cret"}, snap(nil))
	ctx := testCtx(t)
	params := map[string]*pb.ModelRepositoryParameter{
		"config":          {ParameterChoice: &pb.ModelRepositoryParameter_StringParam{StringParam: `{"max_batch_size": 4}`}},
		"file:1/model.py": {ParameterChoice: &pb.ModelRepositoryParameter_BytesParam{BytesParam: []byte("print(1)")}},
		"n":               {ParameterChoice: &pb.ModelRepositoryParameter_Int64Param{Int64Param: 3}},
		"b":               {ParameterChoice: &pb.ModelRepositoryParameter_BoolParam{BoolParam: true}},
	}
	load := func(ctx context.Context) error {
		_, err := h.client.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: "m", Parameters: params})
		return err
	}
	unload := func(ctx context.Context) error {
		_, err := h.client.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: "m"})
		return err
	}

	for _, call := range []func(context.Context) error{load, unload} {
		wantCode(t, call(ctx), codes.Unauthenticated)
		wantCode(t, call(metadata.AppendToOutgoingContext(ctx, "authorization", "Basic czNjcmV0")), codes.Unauthenticated)
		wantCode(t, call(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")), codes.PermissionDenied)
	}
	if len(h.models.loads)+len(h.models.unloads) != 0 {
		t.Fatalf("unauthorized calls reached the model manager: %v %v", h.models.loads, h.models.unloads)
	}

	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if err := load(authed); err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := unload(authed); err != nil {
		t.Fatalf("unload: %v", err)
	}
	wantLoad := loadCall{"m", map[string]any{
		"config": `{"max_batch_size": 4}`, "file:1/model.py": []byte("print(1)"), "n": int64(3), "b": true,
	}}
	if len(h.models.loads) != 1 || !reflect.DeepEqual(h.models.loads[0], wantLoad) {
		t.Errorf("loads = %#v, want %#v", h.models.loads, wantLoad)
	}
	if len(h.models.unloads) != 1 || h.models.unloads[0].name != "m" {
		t.Errorf("unloads = %#v", h.models.unloads)
	}

	// The model manager's refusal (mode none) maps through apierr.
	h.models.loadErr = apierr.New(apierr.Unavailable, "explicit model load / unload is not allowed if polling is enabled")
	wantCode(t, load(authed), codes.Unavailable)
	_, err := h.client.RepositoryModelLoad(authed, &pb.RepositoryModelLoadRequest{})
	wantCode(t, err, codes.InvalidArgument)
}

func TestRepositoryWithoutToken(t *testing.T) {
	h := newHarness(t, Config{}, snap(nil))
	if _, err := h.client.RepositoryModelLoad(testCtx(t), &pb.RepositoryModelLoadRequest{ModelName: "m"}); err != nil {
		t.Fatalf("load without a configured token: %v", err)
	}
}

func TestErrorCodeMapping(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{apierr.New(apierr.InvalidArgument, "model m: input %q is not an input of the model", "X"), codes.InvalidArgument},
		{apierr.New(apierr.NotFound, "unknown model m"), codes.NotFound},
		{apierr.Unavailablef("model m has no routable instance"), codes.Unavailable},
		{apierr.New(apierr.DeadlineExceeded, "model m: execute timed out"), codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{apierr.Wrap(apierr.Internal, errBoom, "model m raised"), codes.Internal},
		{errBoom, codes.Internal},
		{apierr.New(apierr.ResourceExhausted, "model m queue is full"), codes.Unavailable},
	} {
		h.models.mu.Lock()
		h.models.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) { return nil, tc.err }
		h.models.mu.Unlock()
		_, err := h.client.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m"})
		st := wantCode(t, err, tc.want)
		if st.Message() != tc.err.Error() {
			t.Errorf("message = %q, want %q", st.Message(), tc.err.Error())
		}
	}
}

func TestMaxRecvBytes(t *testing.T) {
	h := newHarness(t, Config{MaxRecvBytes: 1024}, snap(map[string]bool{"m": true}))
	req := &pb.ModelInferRequest{
		ModelName:        "m",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "X", Datatype: "UINT8", Shape: []int64{4096}}},
		RawInputContents: [][]byte{make([]byte, 4096)},
	}
	_, err := h.client.ModelInfer(testCtx(t), req)
	wantCode(t, err, codes.ResourceExhausted)
}
