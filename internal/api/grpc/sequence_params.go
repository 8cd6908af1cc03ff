package grpc

import (
	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// sequenceFromProto reads the reserved sequence parameters with Triton's
// gRPC rules: sequence_id is an int64_param or a string_param (a negative
// int64 is taken as its unsigned bit pattern, as Triton does),
// sequence_start and sequence_end are bool_params. Errors use Triton's
// texts.
func sequenceFromProto(model string, in map[string]*pb.InferParameter) (inference.Sequence, error) {
	var seq inference.Sequence
	if p, ok := in[inference.ParamSequenceID]; ok {
		switch v := p.GetParameterChoice().(type) {
		case *pb.InferParameter_Int64Param:
			seq.ID = inference.NumericID(uint64(v.Int64Param))
		case *pb.InferParameter_StringParam:
			if len(v.StringParam) > inference.MaxCorrelationIDLength {
				return seq, apierr.Wrap(apierr.InvalidArgument, inference.ErrCorrelationIDTooLong, "model %s", model)
			}
			seq.ID = inference.StringID(v.StringParam)
		default:
			return seq, apierr.New(apierr.InvalidArgument,
				"invalid value type for 'sequence_id' parameter, expected int64_param or string_param.")
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{inference.ParamSequenceStart, &seq.Start}, {inference.ParamSequenceEnd, &seq.End}} {
		p, ok := in[f.key]
		if !ok {
			continue
		}
		b, ok := p.GetParameterChoice().(*pb.InferParameter_BoolParam)
		if !ok {
			return seq, apierr.New(apierr.InvalidArgument,
				"invalid value type for '%s' parameter, expected bool_param.", f.key)
		}
		*f.dst = b.BoolParam
	}
	return seq, nil
}
