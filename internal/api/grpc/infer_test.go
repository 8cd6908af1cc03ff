package grpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	gogrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/tensor"
)

// inferCase is one input sent to the echo model, and the raw little-endian
// bytes the model must receive and the client must get back.
type inferCase struct {
	name     string
	datatype string
	shape    []int64
	contents *pb.InferTensorContents // nil: send raw
	raw      []byte
	want     []byte
}

var inferCases = []inferCase{
	{name: "INT32 typed", datatype: "INT32", shape: []int64{1, 2},
		contents: &pb.InferTensorContents{IntContents: []int32{1, -2}},
		want:     []byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff}},
	{name: "INT32 raw", datatype: "INT32", shape: []int64{2},
		raw:  []byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff},
		want: []byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff}},
	{name: "FP32 typed", datatype: "FP32", shape: []int64{2},
		contents: &pb.InferTensorContents{Fp32Contents: []float32{1.5, -2}},
		want:     []byte{0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0}},
	{name: "FP32 raw", datatype: "FP32", shape: []int64{1},
		raw: []byte{0, 0, 0xc0, 0x3f}, want: []byte{0, 0, 0xc0, 0x3f}},
	{name: "FP16 raw", datatype: "FP16", shape: []int64{2},
		raw: []byte{0x00, 0x3c, 0x00, 0xc0}, want: []byte{0x00, 0x3c, 0x00, 0xc0}}, // 1.0, -2.0
	{name: "BF16 raw", datatype: "BF16", shape: []int64{1},
		raw: []byte{0x80, 0x3f}, want: []byte{0x80, 0x3f}},
	{name: "BYTES typed", datatype: "BYTES", shape: []int64{3},
		contents: &pb.InferTensorContents{BytesContents: [][]byte{[]byte("ab"), {}, []byte("\x00z")}},
		want:     []byte{2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 2, 0, 0, 0, 0, 'z'}},
	{name: "BYTES raw", datatype: "BYTES", shape: []int64{1, 1},
		raw: []byte{3, 0, 0, 0, 'x', 'y', 'z'}, want: []byte{3, 0, 0, 0, 'x', 'y', 'z'}},
	{name: "BOOL typed", datatype: "BOOL", shape: []int64{3},
		contents: &pb.InferTensorContents{BoolContents: []bool{true, false, true}},
		want:     []byte{1, 0, 1}},
	{name: "BOOL raw", datatype: "BOOL", shape: []int64{2},
		raw: []byte{0, 1}, want: []byte{0, 1}},
	{name: "INT8 typed", datatype: "INT8", shape: []int64{2},
		contents: &pb.InferTensorContents{IntContents: []int32{-1, 127}},
		want:     []byte{0xff, 0x7f}},
	{name: "INT16 typed", datatype: "INT16", shape: []int64{1},
		contents: &pb.InferTensorContents{IntContents: []int32{-2}},
		want:     []byte{0xfe, 0xff}},
	{name: "INT64 typed", datatype: "INT64", shape: []int64{1},
		contents: &pb.InferTensorContents{Int64Contents: []int64{-1}},
		want:     bytes.Repeat([]byte{0xff}, 8)},
	{name: "UINT8 typed", datatype: "UINT8", shape: []int64{2},
		contents: &pb.InferTensorContents{UintContents: []uint32{0, 255}},
		want:     []byte{0, 255}},
	{name: "UINT16 typed", datatype: "UINT16", shape: []int64{1},
		contents: &pb.InferTensorContents{UintContents: []uint32{0x0201}},
		want:     []byte{1, 2}},
	{name: "UINT32 typed", datatype: "UINT32", shape: []int64{1},
		contents: &pb.InferTensorContents{UintContents: []uint32{0x04030201}},
		want:     []byte{1, 2, 3, 4}},
	{name: "UINT64 typed", datatype: "UINT64", shape: []int64{1},
		contents: &pb.InferTensorContents{Uint64Contents: []uint64{1}},
		want:     []byte{1, 0, 0, 0, 0, 0, 0, 0}},
	{name: "FP64 typed", datatype: "FP64", shape: []int64{1},
		contents: &pb.InferTensorContents{Fp64Contents: []float64{2}},
		want:     []byte{0, 0, 0, 0, 0, 0, 0, 0x40}},
	{name: "empty tensor typed", datatype: "FP32", shape: []int64{0, 3},
		want: []byte{}},
	{name: "empty FP16 without contents", datatype: "FP16", shape: []int64{0},
		want: []byte{}},
}

func TestModelInferContents(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	for _, tc := range inferCases {
		t.Run(tc.name, func(t *testing.T) {
			in := &pb.ModelInferRequest_InferInputTensor{Name: "X", Datatype: tc.datatype, Shape: tc.shape, Contents: tc.contents}
			req := &pb.ModelInferRequest{ModelName: "m", Id: "req-1", Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}
			if tc.raw != nil {
				req.RawInputContents = [][]byte{tc.raw}
			}
			resp, err := h.client.ModelInfer(ctx, req)
			if err != nil {
				t.Fatalf("ModelInfer: %v", err)
			}

			got := h.models.last().Inputs[0]
			if got.Datatype != tensor.Datatype(tc.datatype) || !reflect.DeepEqual(got.Shape, tc.shape) || !bytes.Equal(got.Data, tc.want) {
				t.Errorf("model received %s %v % x, want %s %v % x", got.Datatype, got.Shape, got.Data, tc.datatype, tc.shape, tc.want)
			}

			if resp.GetModelName() != "m" || resp.GetModelVersion() != "1" || resp.GetId() != "req-1" {
				t.Errorf("response names %q %q %q", resp.GetModelName(), resp.GetModelVersion(), resp.GetId())
			}
			if len(resp.GetOutputs()) != 1 || len(resp.GetRawOutputContents()) != 1 {
				t.Fatalf("got %d outputs and %d raw contents, want 1 and 1", len(resp.GetOutputs()), len(resp.GetRawOutputContents()))
			}
			out := resp.GetOutputs()[0]
			if out.GetName() != "OUT_X" || out.GetDatatype() != tc.datatype || !reflect.DeepEqual(out.GetShape(), tc.shape) || out.GetContents() != nil {
				t.Errorf("output = %v", out)
			}
			if !bytes.Equal(resp.GetRawOutputContents()[0], tc.want) {
				t.Errorf("raw_output_contents = % x, want % x", resp.GetRawOutputContents()[0], tc.want)
			}
		})
	}
}

func TestModelInferInvalid(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ctx := testCtx(t)
	input := func(name, dt string, shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape, Contents: c}
	}
	ints := func(v ...int32) *pb.InferTensorContents { return &pb.InferTensorContents{IntContents: v} }
	for _, tc := range []struct {
		name    string
		inputs  []*pb.ModelInferRequest_InferInputTensor
		raw     [][]byte
		mention string // the message must contain this
	}{
		{name: "raw and typed mixed",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{1}, nil), input("B", "INT32", []int64{1}, ints(1))},
			raw:     [][]byte{{1, 0, 0, 0}, {1, 0, 0, 0}},
			mention: `input "B"`},
		{name: "wrong contents field",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "FP32", []int64{1}, ints(1))},
			mention: `input "A"`},
		{name: "two contents fields",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{1}, &pb.InferTensorContents{IntContents: []int32{1}, Fp32Contents: []float32{1}})},
			mention: "fp32_contents"},
		{name: "FP16 typed",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("half", "FP16", []int64{1}, &pb.InferTensorContents{Fp32Contents: []float32{1}})},
			mention: `input "half"`},
		{name: "FP16 without data",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("half", "FP16", []int64{2}, nil)},
			mention: "raw_input_contents"},
		{name: "raw count differs from inputs",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{1}, nil), input("B", "INT32", []int64{1}, nil)},
			raw:     [][]byte{{1, 0, 0, 0}},
			mention: "raw_input_contents has 1 entries for 2 inputs"},
		{name: "raw size does not match shape",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{2, 2}, nil)},
			raw:     [][]byte{{1, 0, 0, 0}},
			mention: `input "A"`},
		{name: "typed count does not match shape",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{3}, ints(1, 2))},
			mention: `input "A"`},
		{name: "raw BYTES element count does not match shape",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("S", "BYTES", []int64{2}, nil)},
			raw:     [][]byte{{1, 0, 0, 0, 'a'}},
			mention: `input "S"`},
		{name: "raw BYTES truncated",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("S", "BYTES", []int64{1}, nil)},
			raw:     [][]byte{{9, 0, 0, 0, 'a'}},
			mention: `input "S"`},
		{name: "unknown datatype",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "FP8", []int64{1}, nil)},
			raw:     [][]byte{{1}},
			mention: `input "A"`},
		{name: "negative dimension",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{-1}, ints())},
			mention: `input "A"`},
		{name: "INT8 out of range",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT8", []int64{1}, ints(300))},
			mention: "out of range"},
		{name: "duplicate input",
			inputs:  []*pb.ModelInferRequest_InferInputTensor{input("A", "INT32", []int64{1}, ints(1)), input("A", "INT32", []int64{1}, ints(1))},
			mention: `input "A"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m", Inputs: tc.inputs, RawInputContents: tc.raw})
			st := wantCode(t, err, codes.InvalidArgument)
			if !strings.Contains(st.Message(), tc.mention) || !strings.Contains(st.Message(), "model m") {
				t.Errorf("message %q does not contain %q and the model", st.Message(), tc.mention)
			}
		})
	}

	_, err := h.client.ModelInfer(ctx, &pb.ModelInferRequest{})
	wantCode(t, err, codes.InvalidArgument)
}

func TestModelInferParametersAndOutputs(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	h.models.inferFn = func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		return &inference.Response{
			Parameters: map[string]any{"i": 3, "u": uint32(4), "f": 0.5, "s": "x", "b": true, "other": []int{1}},
			Outputs: []tensor.Tensor{
				{Name: "A", Datatype: tensor.Int32, Shape: []int64{0}, Parameters: map[string]any{"binary_data_size": int64(0)}},
				{Name: "B", Datatype: tensor.Bool, Shape: []int64{1}, Data: []byte{1}},
			},
		}, nil
	}
	param := func(p *pb.InferParameter) *pb.InferParameter { return p }
	req := &pb.ModelInferRequest{
		ModelName:    "m",
		ModelVersion: "2",
		Id:           "abc",
		Parameters: map[string]*pb.InferParameter{
			"b": param(&pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}}),
			"i": param(&pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -5}}),
			"s": param(&pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "hi"}}),
			"d": param(&pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 1.25}}),
			"u": param(&pb.InferParameter{ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 7}}),
			"e": param(&pb.InferParameter{}),
		},
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{
			Name: "X", Datatype: "INT32", Shape: []int64{1},
			Parameters: map[string]*pb.InferParameter{"p": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 1}}},
			Contents:   &pb.InferTensorContents{IntContents: []int32{1}},
		}},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{
			{Name: "B", Parameters: map[string]*pb.InferParameter{"custom": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 2}}}},
			{Name: "A"},
		},
	}
	resp, err := h.client.ModelInfer(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}

	got := h.models.last()
	if got.Model != "m" || got.Version != "2" || got.ID != "abc" {
		t.Errorf("request names %q %q %q", got.Model, got.Version, got.ID)
	}
	wantParams := map[string]any{"b": true, "i": int64(-5), "s": "hi", "d": 1.25, "u": uint64(7)}
	if !reflect.DeepEqual(got.Parameters, wantParams) {
		t.Errorf("parameters = %#v, want %#v", got.Parameters, wantParams)
	}
	if !reflect.DeepEqual(got.Inputs[0].Parameters, map[string]any{"p": int64(1)}) {
		t.Errorf("input parameters = %#v", got.Inputs[0].Parameters)
	}
	wantOutputs := []inference.RequestedOutput{{Name: "B", Parameters: map[string]any{"custom": int64(2)}}, {Name: "A"}}
	if !reflect.DeepEqual(got.Outputs, wantOutputs) {
		t.Errorf("requested outputs = %#v, want %#v", got.Outputs, wantOutputs)
	}

	// The response falls back to the request's names.
	if resp.GetModelName() != "m" || resp.GetModelVersion() != "2" || resp.GetId() != "abc" {
		t.Errorf("response names %q %q %q", resp.GetModelName(), resp.GetModelVersion(), resp.GetId())
	}
	rp := resp.GetParameters()
	if rp["i"].GetInt64Param() != 3 || rp["u"].GetUint64Param() != 4 || rp["f"].GetDoubleParam() != 0.5 ||
		rp["s"].GetStringParam() != "x" || !rp["b"].GetBoolParam() || rp["other"].GetStringParam() != "[1]" {
		t.Errorf("response parameters = %v", rp)
	}
	if n := len(resp.GetRawOutputContents()); n != 2 {
		t.Fatalf("%d raw outputs, want 2 (an empty output keeps its slot)", n)
	}
	if len(resp.GetRawOutputContents()[0]) != 0 || !bytes.Equal(resp.GetRawOutputContents()[1], []byte{1}) {
		t.Errorf("raw outputs = %v", resp.GetRawOutputContents())
	}
	if resp.GetOutputs()[0].GetParameters()["binary_data_size"].GetInt64Param() != 0 {
		t.Errorf("output parameters = %v", resp.GetOutputs()[0].GetParameters())
	}
}

func TestModelStreamInfer(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	h.models.inferFn = func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		if req.Model == "broken" {
			return nil, apierr.Wrap(apierr.Internal, errBoom, "model broken raised")
		}
		return echo(req), nil
	}
	ctx := testCtx(t)
	stream, err := h.client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(id string) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "m", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "X", Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1.5}}},
		}}
	}
	invalid := valid("bad")
	invalid.RawInputContents = [][]byte{{1}, {2}}
	broken := valid("broken")
	broken.ModelName = "broken"
	for _, req := range []*pb.ModelInferRequest{valid("1"), invalid, broken, valid("2")} {
		if err := stream.Send(req); err != nil {
			t.Fatalf("send %s: %v", req.GetId(), err)
		}
	}

	got := map[string]*pb.ModelStreamInferResponse{}
	for range 4 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		got[resp.GetInferResponse().GetId()] = resp
	}
	for _, id := range []string{"1", "2"} {
		r := got[id]
		if r.GetErrorMessage() != "" || !bytes.Equal(r.GetInferResponse().GetRawOutputContents()[0], []byte{0, 0, 0xc0, 0x3f}) {
			t.Errorf("response %s = %v", id, r)
		}
	}
	if msg := got["bad"].GetErrorMessage(); !strings.Contains(msg, "raw_input_contents has 2 entries for 1 inputs") {
		t.Errorf("invalid request error_message = %q", msg)
	}
	if msg := got["broken"].GetErrorMessage(); !strings.Contains(msg, "boom") || got["broken"].GetInferResponse().GetModelName() != "broken" {
		t.Errorf("failed request answer = %v", got["broken"])
	}

	// The stream stays usable after errors, and ends OK once the client closes.
	if err := stream.Send(valid("3")); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetInferResponse().GetId() != "3" {
		t.Fatalf("after errors: %v, %v", resp, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
}

// Requests on one stream run concurrently: the first blocks until the
// second has been answered, so its response comes second.
func TestModelStreamInferConcurrent(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	fastDone := make(chan struct{})
	h.models.inferFn = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		if req.ID == "slow" {
			select {
			case <-fastDone:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return echo(req), nil
	}
	ctx := testCtx(t)
	stream, err := h.client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"slow", "fast"} {
		if err := stream.Send(&pb.ModelInferRequest{ModelName: "m", Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := stream.Recv()
	if err != nil || first.GetInferResponse().GetId() != "fast" {
		t.Fatalf("first response = %v, %v; want fast", first, err)
	}
	close(fastDone)
	second, err := stream.Recv()
	if err != nil || second.GetInferResponse().GetId() != "slow" {
		t.Fatalf("second response = %v, %v; want slow", second, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestParamToProto(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want *pb.InferParameter
	}{
		{int8(-3), &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -3}}},
		{uint(9), &pb.InferParameter{ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 9}}},
		{float32(0.5), &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 0.5}}},
		{"s", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "s"}}},
		{false, &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: false}}},
		{json.Number("3"), &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 3}}},
		{json.Number("1.5"), &pb.InferParameter{ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 1.5}}},
		{nil, &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "<nil>"}}},
	} {
		if got := paramToProto(tc.in); got.String() != tc.want.String() {
			t.Errorf("paramToProto(%#v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestHandlerPanicBecomesInternal(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	_, err := recoverUnary(log)(context.Background(), nil, &gogrpc.UnaryServerInfo{FullMethod: "/inference.GRPCInferenceService/ModelInfer"},
		func(context.Context, any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal || !strings.Contains(buf.String(), "boom") {
		t.Fatalf("err %v, log %q", err, buf.String())
	}
}

// A response the stream can no longer take (the client went away) ends
// the request as cancelled, not as the model's error, whichever the server
// sees first: the send failing or the stream's context ending.
func TestModelStreamInferClientGoneIsCancelled(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	ended := make(chan error, 1)
	h.models.mu.Lock()
	h.models.streamFn = func(_ context.Context, req *inference.Request, emit func(model.Reply) error) error {
		for {
			// Responses until the stream refuses one; the test's deadline
			// bounds the loop.
			if err := emit(model.Reply{Response: echo(req)}); err != nil {
				ended <- err
				return err
			}
		}
	}
	h.models.mu.Unlock()
	ctx, cancel := context.WithCancel(testCtx(t))
	stream, err := h.client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ModelInferRequest{ModelName: "m", Id: "gone", Inputs: []*pb.ModelInferRequest_InferInputTensor{
		{Name: "X", Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-ended:
		if got := apierr.CodeOf(err); got != apierr.Cancelled {
			t.Fatalf("emit after the client went away = %v (code %v), want %v", err, got, apierr.Cancelled)
		}
	case <-testCtx(t).Done():
		t.Fatal("the model's responses were never refused")
	}
}
