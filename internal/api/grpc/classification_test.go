package grpc

import (
	"strings"
	"testing"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestRefuseClassification(t *testing.T) {
	out := func(p *pb.InferParameter) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "m", Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{
			{Name: "A"}, {Name: "P", Parameters: map[string]*pb.InferParameter{"classification": p}}}}
	}
	err := refuseClassification(out(&pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 3}}))
	if err == nil || !strings.Contains(err.Error(), `output "P": the classification extension is not supported`) {
		t.Fatalf("class_count 3: %v", err)
	}
	if err := refuseClassification(out(&pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{}})); err != nil {
		t.Fatalf("class_count 0 is no request for classification: %v", err)
	}
	if err := refuseClassification(out(&pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "x"}})); err == nil {
		t.Fatal("a non-integer classification parameter passed")
	}
}
