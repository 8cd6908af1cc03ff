package grpc

import (
	"github.com/vigilhq/vigil/internal/apierr"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// paramClassification is the requested-output parameter of Triton's
// classification extension (tritonclient's class_count).
const paramClassification = "classification"

// refuseClassification rejects a request that asks for the classification
// extension on an output, which vigil does not implement, as the HTTP front
// end does, instead of returning the raw tensor as if the parameter had not
// been sent. A class count of 0 is no request for it.
func refuseClassification(in *pb.ModelInferRequest) error {
	for _, o := range in.GetOutputs() {
		p, ok := o.GetParameters()[paramClassification]
		if !ok {
			continue
		}
		if c, isInt := p.GetParameterChoice().(*pb.InferParameter_Int64Param); isInt && c.Int64Param == 0 {
			continue
		}
		return apierr.New(apierr.InvalidArgument, "model %s: output %q: the classification extension is not supported (class_count)",
			in.GetModelName(), o.GetName())
	}
	return nil
}
