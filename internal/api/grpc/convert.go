package grpc

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"reflect"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/sharedmemory"
	"github.com/vigilhq/vigil/internal/tensor"
)

// requestFromProto turns a ModelInferRequest into the protocol-neutral
// request. Every input ends up as raw little-endian bytes, whether it came as
// raw_input_contents or as typed contents. Errors are InvalidArgument and name
// the model and the input at fault.
func requestFromProto(in *pb.ModelInferRequest) (*inference.Request, error) {
	if in.GetModelName() == "" {
		return nil, apierr.New(apierr.InvalidArgument, "model_name is required")
	}
	model := in.GetModelName()
	if err := refuseClassification(in); err != nil {
		return nil, err
	}
	raw := in.GetRawInputContents()
	// Inputs in shared memory have no raw_input_contents entry (as
	// tritonclient sends them): the entries belong to the other inputs, in
	// order.
	inline := 0
	for _, t := range in.GetInputs() {
		if !sharedmemory.InSharedMemory(paramsFromProto(t.GetParameters())) {
			inline++
		}
	}
	if len(raw) > 0 && len(raw) != inline {
		return nil, apierr.New(apierr.InvalidArgument,
			"model %s: raw_input_contents has %d entries for %d inputs not in shared memory; give one per input, in the order of inputs",
			model, len(raw), inline)
	}

	seq, err := sequenceFromProto(model, in.GetParameters())
	if err != nil {
		return nil, err
	}
	req := &inference.Request{
		Model:      model,
		Version:    in.GetModelVersion(),
		ID:         in.GetId(),
		Parameters: paramsFromProto(in.GetParameters()),
		Inputs:     make([]tensor.Tensor, 0, len(in.GetInputs())),
		Sequence:   seq,
	}
	for _, k := range [...]string{inference.ParamSequenceID, inference.ParamSequenceStart, inference.ParamSequenceEnd} {
		delete(req.Parameters, k)
	}
	if len(req.Parameters) == 0 {
		req.Parameters = nil
	}
	seen := make(map[string]bool, len(in.GetInputs()))
	next := 0 // the next raw_input_contents entry
	for i, t := range in.GetInputs() {
		if t.GetName() == "" {
			return nil, apierr.New(apierr.InvalidArgument, "model %s: input %d has no name", model, i)
		}
		if seen[t.GetName()] {
			return nil, apierr.New(apierr.InvalidArgument, "model %s: input %q is given more than once", model, t.GetName())
		}
		seen[t.GetName()] = true

		dt := tensor.Datatype(t.GetDatatype())
		if !dt.Valid() {
			return nil, apierr.New(apierr.InvalidArgument, "model %s: input %q has unknown datatype %q", model, t.GetName(), t.GetDatatype())
		}
		n, err := tensor.ElementCount(t.GetShape())
		if err != nil {
			return nil, apierr.Wrap(apierr.InvalidArgument, err, "model %s: input %q", model, t.GetName())
		}

		params := paramsFromProto(t.GetParameters())
		if sharedmemory.InSharedMemory(params) {
			// internal/sharedmemory fills the data in from the region.
			if contentsLen(t.GetContents()) > 0 {
				return nil, apierr.New(apierr.InvalidArgument,
					"unexpected 'content' provided when using shared memory for input tensor '%s' for model '%s'", t.GetName(), model)
			}
			req.Inputs = append(req.Inputs, tensor.Tensor{Name: t.GetName(), Datatype: dt, Shape: t.GetShape(), Parameters: params})
			continue
		}
		var data []byte
		if len(raw) > 0 {
			if contentsLen(t.GetContents()) > 0 {
				return nil, apierr.New(apierr.InvalidArgument,
					"model %s: input %q sets contents while the request uses raw_input_contents; use one or the other for all inputs",
					model, t.GetName())
			}
			data = raw[next]
			next++
		} else {
			data, err = encodeContents(dt, n, t.GetContents())
			if err != nil {
				return nil, apierr.Wrap(apierr.InvalidArgument, err, "model %s: input %q", model, t.GetName())
			}
		}

		tt := tensor.Tensor{
			Name:       t.GetName(),
			Datatype:   dt,
			Shape:      t.GetShape(),
			Data:       data,
			Parameters: params,
		}
		if err := tt.Validate(); err != nil {
			return nil, apierr.Wrap(apierr.InvalidArgument, err, "model %s: input %q does not match its shape", model, t.GetName())
		}
		req.Inputs = append(req.Inputs, tt)
	}

	for _, o := range in.GetOutputs() {
		req.Outputs = append(req.Outputs, inference.RequestedOutput{
			Name:       o.GetName(),
			Parameters: paramsFromProto(o.GetParameters()),
		})
	}
	return req, nil
}

// responseToProto turns a response into a ModelInferResponse with every
// output in raw_output_contents, as Triton answers; tritonclient reads raw.
// Empty model, version and id fall back to the request's.
func responseToProto(req *inference.Request, resp *inference.Response) *pb.ModelInferResponse {
	out := &pb.ModelInferResponse{
		ModelName:    cmp.Or(resp.Model, req.Model),
		ModelVersion: cmp.Or(resp.Version, req.Version),
		Id:           cmp.Or(resp.ID, req.ID),
		Parameters:   paramsToProto(resp.Parameters),
		Outputs:      make([]*pb.ModelInferResponse_InferOutputTensor, 0, len(resp.Outputs)),
		// One entry per output, even an empty one, so indexes stay aligned.
		RawOutputContents: make([][]byte, 0, len(resp.Outputs)),
	}
	for _, t := range resp.Outputs {
		out.Outputs = append(out.Outputs, &pb.ModelInferResponse_InferOutputTensor{
			Name:       t.Name,
			Datatype:   string(t.Datatype),
			Shape:      t.Shape,
			Parameters: paramsToProto(t.Parameters),
		})
		// An output written to shared memory keeps its (empty) entry, as
		// Triton sends it.
		data := t.Data
		if data == nil || sharedmemory.InSharedMemory(t.Parameters) {
			data = []byte{}
		}
		out.RawOutputContents = append(out.RawOutputContents, data)
	}
	return out
}

// contentsField is one of InferTensorContents' repeated fields: its proto
// name and how many elements it holds.
type contentsField struct {
	name string
	len  int
}

func contentsFields(c *pb.InferTensorContents) []contentsField {
	return []contentsField{
		{"bool_contents", len(c.GetBoolContents())},
		{"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())},
		{"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())},
		{"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())},
		{"bytes_contents", len(c.GetBytesContents())},
	}
}

// contentsLen counts the elements of every field of c. An empty contents
// message counts as unset: some clients send one alongside raw contents.
func contentsLen(c *pb.InferTensorContents) int {
	n := 0
	for _, f := range contentsFields(c) {
		n += f.len
	}
	return n
}

// typedField is the InferTensorContents field that carries each datatype;
// FP16 and BF16 have none and travel raw only.
var typedField = map[tensor.Datatype]string{
	tensor.Bool:   "bool_contents",
	tensor.Int8:   "int_contents",
	tensor.Int16:  "int_contents",
	tensor.Int32:  "int_contents",
	tensor.Int64:  "int64_contents",
	tensor.Uint8:  "uint_contents",
	tensor.Uint16: "uint_contents",
	tensor.Uint32: "uint_contents",
	tensor.Uint64: "uint64_contents",
	tensor.FP32:   "fp32_contents",
	tensor.FP64:   "fp64_contents",
	tensor.Bytes:  "bytes_contents",
}

// encodeContents converts typed contents of datatype dt, which must hold n
// elements, to the raw little-endian form.
func encodeContents(dt tensor.Datatype, n int64, c *pb.InferTensorContents) ([]byte, error) {
	want, ok := typedField[dt]
	for _, f := range contentsFields(c) {
		if f.len > 0 && f.name != want {
			if !ok {
				return nil, fmt.Errorf("%s has no typed contents field, send it in raw_input_contents (got %s)", dt, f.name)
			}
			return nil, fmt.Errorf("datatype %s takes %s, got %s", dt, want, f.name)
		}
	}
	if !ok {
		if n != 0 {
			return nil, fmt.Errorf("%s data must be sent in raw_input_contents", dt)
		}
		return []byte{}, nil
	}

	var got int
	for _, f := range contentsFields(c) {
		if f.name == want {
			got = f.len
		}
	}
	if int64(got) != n {
		return nil, fmt.Errorf("shape needs %d elements, %s has %d", n, want, got)
	}

	size := dt.Size()
	out := make([]byte, 0, int(n)*size)
	le := binary.LittleEndian
	switch dt {
	case tensor.Bool:
		for _, v := range c.GetBoolContents() {
			b := byte(0)
			if v {
				b = 1
			}
			out = append(out, b)
		}
	case tensor.Int8, tensor.Int16, tensor.Int32:
		lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
		switch dt {
		case tensor.Int8:
			lo, hi = math.MinInt8, math.MaxInt8
		case tensor.Int16:
			lo, hi = math.MinInt16, math.MaxInt16
		}
		for i, v := range c.GetIntContents() {
			if int64(v) < lo || int64(v) > hi {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", i, v, dt)
			}
			switch size {
			case 1:
				out = append(out, byte(int8(v)))
			case 2:
				out = le.AppendUint16(out, uint16(int16(v)))
			default:
				out = le.AppendUint32(out, uint32(v))
			}
		}
	case tensor.Int64:
		for _, v := range c.GetInt64Contents() {
			out = le.AppendUint64(out, uint64(v))
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		hi := uint32(math.MaxUint32)
		switch dt {
		case tensor.Uint8:
			hi = math.MaxUint8
		case tensor.Uint16:
			hi = math.MaxUint16
		}
		for i, v := range c.GetUintContents() {
			if v > hi {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", i, v, dt)
			}
			switch size {
			case 1:
				out = append(out, byte(v))
			case 2:
				out = le.AppendUint16(out, uint16(v))
			default:
				out = le.AppendUint32(out, v)
			}
		}
	case tensor.Uint64:
		for _, v := range c.GetUint64Contents() {
			out = le.AppendUint64(out, v)
		}
	case tensor.FP32:
		for _, v := range c.GetFp32Contents() {
			out = le.AppendUint32(out, math.Float32bits(v))
		}
	case tensor.FP64:
		for _, v := range c.GetFp64Contents() {
			out = le.AppendUint64(out, math.Float64bits(v))
		}
	case tensor.Bytes:
		for _, v := range c.GetBytesContents() {
			if uint64(len(v)) > math.MaxUint32 {
				return nil, fmt.Errorf("BYTES element longer than 4 GiB")
			}
			out = tensor.AppendBytesElement(out, v)
		}
	}
	return out, nil
}

// paramsFromProto converts protocol parameters to Go values: bool, int64,
// string, float64 or uint64. A parameter with no value set is dropped.
func paramsFromProto(in map[string]*pb.InferParameter) map[string]any {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]any, len(in))
	for k, p := range in {
		switch v := p.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *pb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *pb.InferParameter_StringParam:
			out[k] = v.StringParam
		case *pb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		case *pb.InferParameter_Uint64Param:
			out[k] = v.Uint64Param
		}
	}
	return out
}

// paramsToProto converts Go parameter values to protocol parameters. Signed
// integers become int64_param, unsigned ones uint64_param, floats
// double_param, json.Number whichever fits; any other type is sent as its
// fmt.Sprint form in string_param, so a response never fails on a parameter.
func paramsToProto(in map[string]any) map[string]*pb.InferParameter {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]*pb.InferParameter, len(in))
	for k, v := range in {
		out[k] = paramToProto(v)
	}
	return out
}

func paramToProto(v any) *pb.InferParameter {
	p := &pb.InferParameter{}
	switch x := v.(type) {
	case bool:
		p.ParameterChoice = &pb.InferParameter_BoolParam{BoolParam: x}
		return p
	case string:
		p.ParameterChoice = &pb.InferParameter_StringParam{StringParam: x}
		return p
	case json.Number:
		if i, err := x.Int64(); err == nil {
			p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: i}
		} else if f, err := x.Float64(); err == nil {
			p.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: f}
		} else {
			p.ParameterChoice = &pb.InferParameter_StringParam{StringParam: x.String()}
		}
		return p
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: rv.Int()}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		p.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: rv.Uint()}
	case reflect.Float32, reflect.Float64:
		p.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: rv.Float()}
	default:
		p.ParameterChoice = &pb.InferParameter_StringParam{StringParam: fmt.Sprint(v)}
	}
	return p
}

// repoParamsFromProto converts repository load/unload parameters: bool,
// int64, string or []byte (Triton's "file:<path>" overrides).
func repoParamsFromProto(in map[string]*pb.ModelRepositoryParameter) map[string]any {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]any, len(in))
	for k, p := range in {
		switch v := p.GetParameterChoice().(type) {
		case *pb.ModelRepositoryParameter_BoolParam:
			out[k] = v.BoolParam
		case *pb.ModelRepositoryParameter_Int64Param:
			out[k] = v.Int64Param
		case *pb.ModelRepositoryParameter_StringParam:
			out[k] = v.StringParam
		case *pb.ModelRepositoryParameter_BytesParam:
			out[k] = v.BytesParam
		}
	}
	return out
}
