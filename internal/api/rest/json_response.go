package rest

import (
	"encoding/json"
	"maps"
	"strconv"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/sharedmemory"
	"github.com/vigilhq/vigil/internal/tensor"
)

// encodeInferResponse builds the response body. When any output is binary,
// jsonLen is the length of the JSON header that starts the body (for the
// Inference-Header-Content-Length header) and binary is true.
//
// The JSON is written by hand, byte for byte what encoding/json makes of
// inferResponseJSON (TestEncodeInferResponseMatchesReflect), without
// reflection or a second pass over the data. Responses with a BYTES output
// in JSON go through encoding/json itself, which escapes HTML characters
// inside the strings.
func encodeInferResponse(resp *inference.Response, format outputFormat) (body []byte, jsonLen int, binary bool, err error) {
	header, tails, err := encodeInferResponseParts(resp, format)
	if err != nil || tails == nil {
		return header, len(header), false, err
	}
	return assembleBinaryResponse(header, tails), len(header), true, nil
}

// encodeInferResponseParts is encodeInferResponse with the body in parts:
// the JSON header, then the binary outputs in order (nil when none is
// binary), so that the handler writes them without joining them first.
func encodeInferResponseParts(resp *inference.Response, format outputFormat) (header []byte, tails [][]byte, err error) {
	size := 128 + len(resp.Model) + len(resp.ID)
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if t.Datatype == tensor.Bytes && !format.isBinary(t.Name) && !sharedmemory.InSharedMemory(t.Parameters) {
			body, jsonLen, binary, err := encodeInferResponseReflect(resp, format)
			if err != nil || !binary {
				return body, nil, err
			}
			return body[:jsonLen], [][]byte{body[jsonLen:]}, nil
		}
		size += 96 + len(t.Name)
		if !format.isBinary(t.Name) {
			size += 12 * len(t.Data) / max(t.Datatype.Size(), 1)
		}
	}
	// Errors are returned in the order encoding/json would meet them:
	// outputs that cannot be sent first, parameters that cannot be encoded
	// (found when the whole response was marshalled) last.
	var paramErr error
	marshal := func(b []byte, m map[string]any) []byte {
		p, err := json.Marshal(m)
		if err != nil {
			if paramErr == nil {
				paramErr = err
			}
			return b
		}
		return append(b, p...)
	}

	b := make([]byte, 0, size)
	b = append(b, `{"model_name":`...)
	b = appendQuoted(b, resp.Model)
	if resp.Version != "" {
		b = append(b, `,"model_version":`...)
		b = appendQuoted(b, resp.Version)
	}
	if resp.ID != "" {
		b = append(b, `,"id":`...)
		b = appendQuoted(b, resp.ID)
	}
	if len(resp.Parameters) > 0 {
		b = append(b, `,"parameters":`...)
		b = marshal(b, resp.Parameters)
	}
	b = append(b, `,"outputs":[`...)
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if i > 0 {
			b = append(b, ',')
		}
		shm := sharedmemory.InSharedMemory(t.Parameters)
		if !shm {
			if err := t.Validate(); err != nil {
				return nil, nil, apierr.Wrap(apierr.Internal, err, "model %q returned a malformed output", resp.Model)
			}
		}
		b = append(b, `{"name":`...)
		b = appendQuoted(b, t.Name)
		b = append(b, `,"datatype":`...)
		b = appendQuoted(b, string(t.Datatype))
		b = append(b, `,"shape":[`...)
		for k, d := range t.Shape {
			if k > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, ']')
		switch {
		case shm:
			// Written to its region: name, datatype, shape and where.
			b = append(b, `,"parameters":`...)
			b = marshal(b, t.Parameters)
		case format.isBinary(t.Name):
			b = append(b, `,"parameters":`...)
			if len(t.Parameters) == 0 {
				b = append(b, `{"binary_data_size":`...)
				b = strconv.AppendInt(b, int64(len(t.Data)), 10)
				b = append(b, '}')
			} else {
				p := maps.Clone(t.Parameters)
				p[paramBinaryDataSize] = len(t.Data)
				b = marshal(b, p)
			}
			tails = append(tails, t.Data)
		default:
			if len(t.Parameters) > 0 {
				b = append(b, `,"parameters":`...)
				b = marshal(b, t.Parameters)
			}
			b = append(b, `,"data":`...)
			if b, err = appendJSONData(b, t); err != nil {
				return nil, nil, apierr.New(apierr.InvalidArgument, "model %q output %q: %s", resp.Model, t.Name, err)
			}
		}
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	if paramErr != nil {
		return nil, nil, apierr.Wrap(apierr.Internal, paramErr, "model %q: cannot encode the response", resp.Model)
	}
	return b, tails, nil
}

// appendQuoted appends s as encoding/json quotes it: as it is when it holds
// only printable ASCII that needs no escape (HTML characters included, which
// encoding/json escapes), through encoding/json otherwise.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
