package grpc

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestModelInferSequenceParameters(t *testing.T) {
	h := newHarness(t, Config{}, snap(map[string]bool{"m": true}))
	i64 := func(v int64) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: v}}
	}
	str := func(v string) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: v}}
	}
	boolean := func(v bool) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: v}}
	}
	u64 := &pb.InferParameter{ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 3}}
	infer := func(params map[string]*pb.InferParameter) error {
		_, err := h.client.ModelInfer(testCtx(t), &pb.ModelInferRequest{
			ModelName: "m", Parameters: params,
			Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "X", Datatype: "INT32", Shape: []int64{1},
				Contents: &pb.InferTensorContents{IntContents: []int32{1}}}},
		})
		return err
	}
	for _, tc := range []struct {
		params   map[string]*pb.InferParameter
		want     inference.Sequence
		leftover int
	}{
		{map[string]*pb.InferParameter{"sequence_id": i64(1001), "sequence_start": boolean(true), "sequence_end": boolean(false)},
			inference.Sequence{ID: inference.NumericID(1001), Start: true}, 0},
		{map[string]*pb.InferParameter{"sequence_id": str("a-uuid"), "sequence_start": boolean(false), "sequence_end": boolean(true), "k": str("v")},
			inference.Sequence{ID: inference.StringID("a-uuid"), End: true}, 1},
		{map[string]*pb.InferParameter{"sequence_id": i64(-1)}, inference.Sequence{ID: inference.NumericID(1<<64 - 1)}, 0},
	} {
		if err := infer(tc.params); err != nil {
			t.Fatal(err)
		}
		got := h.models.last()
		if got.Sequence != tc.want || len(got.Parameters) != tc.leftover {
			t.Errorf("sequence %+v parameters %v, want %+v and %d others", got.Sequence, got.Parameters, tc.want, tc.leftover)
		}
	}
	for _, tc := range []struct {
		params map[string]*pb.InferParameter
		want   string
	}{
		{map[string]*pb.InferParameter{"sequence_id": u64}, "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."},
		{map[string]*pb.InferParameter{"sequence_id": i64(1), "sequence_start": i64(1)}, "invalid value type for 'sequence_start' parameter, expected bool_param."},
		{map[string]*pb.InferParameter{"sequence_id": i64(1), "sequence_end": str("true")}, "invalid value type for 'sequence_end' parameter, expected bool_param."},
		{map[string]*pb.InferParameter{"sequence_id": str(strings.Repeat("y", 129))}, "string correlation ID cannot be longer than 128 characters"},
	} {
		err := infer(tc.params)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("error %v, want InvalidArgument with %q", err, tc.want)
		}
	}
}
