package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/sharedmemory"
	"github.com/vigilhq/vigil/internal/tensor"
)

// The JSON inference request and response of the Open Inference Protocol,
// with the binary extension's parameters. Decoding errors are plain errors
// that name the input, output or field; the handler classifies them as
// InvalidArgument and names the model.

// Protocol parameters the REST layer consumes itself.
const (
	paramBinaryDataSize   = "binary_data_size"
	paramBinaryData       = "binary_data"
	paramBinaryDataOutput = "binary_data_output"
	paramClassCount       = "classification"
)

type inferRequestJSON struct {
	ID         string              `json:"id"`
	Parameters map[string]any      `json:"parameters"`
	Inputs     []inferInputJSON    `json:"inputs"`
	Outputs    []requestOutputJSON `json:"outputs"`
}

type inferInputJSON struct {
	Name       string          `json:"name"`
	Shape      *[]int64        `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

type requestOutputJSON struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters"`
}

// outputFormat says which outputs the response carries in binary.
type outputFormat struct {
	binaryDefault bool            // binary_data_output on the request
	binary        map[string]bool // binary_data on a requested output
}

func (f outputFormat) isBinary(name string) bool {
	if b, ok := f.binary[name]; ok {
		return b
	}
	return f.binaryDefault
}

// decodeInferRequest decodes the JSON header of an inference request and
// attaches each input's data, from JSON or from bin. The request's Model and
// Version are left for the caller, who knows them from the path.
func decodeInferRequest(header []byte, bin binaryReader) (*inference.Request, outputFormat, error) {
	var raw inferRequestJSON
	var format outputFormat
	if !utf8.Valid(header) {
		return nil, format, checkUTF8(header, "the JSON inference header")
	}
	header = quoteNonFinite(header)
	if err := unmarshalInferHeader(header, &raw); err != nil {
		return nil, format, err
	}
	if raw.Inputs == nil {
		return nil, format, errors.New("field inputs is required")
	}

	params, err := inferParameters(raw.Parameters, "parameters")
	if err != nil {
		return nil, format, err
	}
	if format.binaryDefault, err = boolParameter(params, paramBinaryDataOutput, "parameters"); err != nil {
		return nil, format, err
	}
	delete(params, paramBinaryDataOutput)
	seq, err := takeSequence(params)
	if err != nil {
		return nil, format, err
	}

	req := &inference.Request{ID: raw.ID, Parameters: nilIfEmpty(params), Inputs: make([]tensor.Tensor, 0, len(raw.Inputs)), Sequence: seq}
	for i := range raw.Inputs {
		t, err := decodeInput(&raw.Inputs[i], i, &bin)
		if err != nil {
			return nil, format, err
		}
		if slices.ContainsFunc(req.Inputs, func(u tensor.Tensor) bool { return u.Name == t.Name }) {
			return nil, format, fmt.Errorf("input %q is given more than once", t.Name)
		}
		req.Inputs = append(req.Inputs, t)
	}
	if bin.present {
		if err := bin.finish(); err != nil {
			return nil, format, err
		}
	}

	seenOut := make(map[string]bool, len(raw.Outputs))
	for i, o := range raw.Outputs {
		if o.Name == "" {
			return nil, format, fmt.Errorf("outputs[%d]: field name is required", i)
		}
		where := fmt.Sprintf("output %q", o.Name)
		if seenOut[o.Name] {
			return nil, format, fmt.Errorf("%s is requested more than once", where)
		}
		seenOut[o.Name] = true
		p, err := inferParameters(o.Parameters, where+" parameters")
		if err != nil {
			return nil, format, err
		}
		if err := refuseUnsupported(p, where); err != nil {
			return nil, format, err
		}
		if sharedmemory.InSharedMemory(p) {
			if b, _ := p[paramBinaryData].(bool); b {
				return nil, format, fmt.Errorf("%s: Output can't set both 'shared_memory_region' and 'binary_data'", where)
			}
			if _, ok := p[paramClassCount]; ok {
				return nil, format, fmt.Errorf("%s: Output can't set both 'shared_memory_region' and 'classification'", where)
			}
		}
		if _, ok := p[paramBinaryData]; ok {
			b, err := boolParameter(p, paramBinaryData, where+" parameters")
			if err != nil {
				return nil, format, err
			}
			if format.binary == nil {
				format.binary = map[string]bool{}
			}
			format.binary[o.Name] = b
			delete(p, paramBinaryData)
		}
		req.Outputs = append(req.Outputs, inference.RequestedOutput{Name: o.Name, Parameters: nilIfEmpty(p)})
	}
	return req, format, nil
}

// unmarshalInferHeader fills raw from the JSON header: through the fast
// scanner when it takes the header, else through encoding/json.
func unmarshalInferHeader(header []byte, raw *inferRequestJSON) error {
	if scanInferHeader(header, raw) {
		return nil
	}
	*raw = inferRequestJSON{}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if err := dec.Decode(raw); err != nil {
		return fmt.Errorf("malformed JSON inference header: %s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("malformed JSON inference header: unexpected data after the JSON object (is the Inference-Header-Content-Length header right?)")
	}
	return nil
}

func decodeInput(in *inferInputJSON, i int, bin *binaryReader) (tensor.Tensor, error) {
	var t tensor.Tensor
	switch {
	case in.Name == "":
		return t, fmt.Errorf("inputs[%d]: field name is required", i)
	case in.Datatype == "":
		return t, fmt.Errorf("input %q: field datatype is required", in.Name)
	case in.Shape == nil:
		return t, fmt.Errorf("input %q: field shape is required", in.Name)
	}
	dt := tensor.Datatype(in.Datatype)
	if !dt.Valid() {
		return t, fmt.Errorf("input %q: unknown datatype %q", in.Name, in.Datatype)
	}
	shape := *in.Shape
	n, err := tensor.ElementCount(shape)
	if err != nil {
		return t, fmt.Errorf("input %q: %w", in.Name, err)
	}
	where := "input " + strconv.Quote(in.Name)
	params, err := inferParameters(in.Parameters, where+" parameters")
	if err != nil {
		return t, err
	}
	if err := refuseUnsupported(params, where); err != nil {
		return t, err
	}
	t = tensor.Tensor{Name: in.Name, Datatype: dt, Shape: shape}

	hasJSONData := len(in.Data) > 0 && !bytes.Equal(bytes.TrimSpace(in.Data), []byte("null"))
	_, hasSize := params[paramBinaryDataSize]
	if sharedmemory.InSharedMemory(params) {
		// The data is in a region; internal/sharedmemory fills it in.
		if hasJSONData || hasSize {
			set := "'data'"
			if hasSize {
				set = "'binary_data_size' in 'parameters'"
			}
			return t, fmt.Errorf("%s: Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But set %s and 'shared_memory_region' in 'parameters'", where, set)
		}
		t.Parameters = params
		return t, nil
	}
	if size, ok := params[paramBinaryDataSize]; ok {
		s, isInt := size.(int64)
		if f, isFloat := size.(float64); isFloat && f == math.Trunc(f) && f >= 0 && f < 1<<53 {
			s, isInt = int64(f), true // 64.0: an integer written as a float
		}
		if !isInt || s < 0 {
			return t, fmt.Errorf("%s: parameter binary_data_size must be a non-negative integer, got %#v", where, size)
		}
		if hasJSONData {
			return t, fmt.Errorf("%s: has both data and the binary_data_size parameter; give one", where)
		}
		if t.Data, err = bin.take(in.Name, s); err != nil {
			return t, err
		}
		delete(params, paramBinaryDataSize)
		if err := t.Validate(); err != nil {
			return t, fmt.Errorf("binary data of %s does not match its shape and datatype: %w", where, err)
		}
	} else {
		if !hasJSONData {
			return t, fmt.Errorf("%s: field data is required (or the binary_data_size parameter with binary data, or the shared_memory_region parameter)", where)
		}
		if t.Data, err = decodeJSONData(in.Data, dt, shape, n); err != nil {
			return t, fmt.Errorf("%s: %w", where, err)
		}
	}
	t.Parameters = nilIfEmpty(params)
	return t, nil
}

// decodeJSONData converts a nested or flat JSON array of n elements (valid
// JSON) to raw bytes. Nesting is not checked against the shape; only the
// element count is, as Triton does.
func decodeJSONData(raw json.RawMessage, dt tensor.Datatype, shape []int64, n int64) ([]byte, error) {
	// Every JSON element takes at least one byte, so the body bounds the
	// allocation whatever the shape claims.
	capElems := min(n, int64(len(raw)))
	var out []byte
	if size := dt.Size(); size > 0 {
		out = make([]byte, 0, capElems*int64(size))
	} else {
		out = make([]byte, 0, len(raw)+4*int(capElems))
	}
	if fast, ok, err := scanPlainElements(out, raw, dt, shape, n); ok || err != nil {
		return fast, err
	}
	return decodeJSONTokens(out, raw, dt, shape, n)
}

// decodeJSONTokens is decodeJSONData's general path, through the token
// decoder.
func decodeJSONTokens(out []byte, raw json.RawMessage, dt tensor.Datatype, shape []int64, n int64) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var count int64
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed data: %s", describeJSONError(err))
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				return nil, errors.New("data holds an object; elements must be numbers, booleans or strings")
			}
			continue
		case nil:
			return nil, fmt.Errorf("data element %d is null", count)
		}
		if count == n {
			return nil, fmt.Errorf("shape %v needs %d elements, data has more", shape, n)
		}
		if out, err = appendElement(out, dt, tok); err != nil {
			return nil, fmt.Errorf("data element %d: %w", count, err)
		}
		count++
	}
	if count != n {
		return nil, fmt.Errorf("shape %v needs %d elements, data has %d", shape, n, count)
	}
	return out, nil
}

// inferParameters is normalizeParameters for an inference request, whose
// empty parameters are nil (the decoder only reads and deletes from them).
func inferParameters(p map[string]any, where string) (map[string]any, error) {
	if len(p) == 0 {
		return nil, nil
	}
	return normalizeParameters(p, where)
}

// normalizeParameters checks that parameter values are strings, numbers or
// booleans and turns JSON numbers into int64 (integer literals), uint64
// (integers above the int64 range) or float64.
func normalizeParameters(p map[string]any, where string) (map[string]any, error) {
	out := make(map[string]any, len(p))
	for k, v := range p {
		switch v := v.(type) {
		case string, bool, int64:
			out[k] = v
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%s: %q is not a finite number", where, k)
			}
			out[k] = v
		case json.Number:
			if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				out[k] = i
				continue
			}
			if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				out[k] = u // above int64: a uint64 sequence_id, say
				continue
			}
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: number %s is out of range", where, k, truncate(string(v), 32))
			}
			out[k] = f
		default:
			return nil, fmt.Errorf("%s: %q must be a string, number or boolean", where, k)
		}
	}
	return out, nil
}

func boolParameter(p map[string]any, key, where string) (bool, error) {
	v, ok := p[key]
	if !ok {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s: %q must be a boolean, got %v", where, key, v)
	}
	return b, nil
}

// refuseUnsupported rejects the classification extension, which vigil does
// not implement, instead of silently ignoring it.
func refuseUnsupported(p map[string]any, where string) error {
	if v, ok := p[paramClassCount]; ok && v != int64(0) {
		return fmt.Errorf("%s: the classification extension is not supported", where)
	}
	return nil
}

func nilIfEmpty(p map[string]any) map[string]any {
	if len(p) == 0 {
		return nil
	}
	return p
}

type inferResponseJSON struct {
	ModelName    string             `json:"model_name"`
	ModelVersion string             `json:"model_version,omitempty"`
	ID           string             `json:"id,omitempty"`
	Parameters   map[string]any     `json:"parameters,omitempty"`
	Outputs      []outputTensorJSON `json:"outputs"`
}

type outputTensorJSON struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// encodeInferResponseReflect is encodeInferResponse through encoding/json:
// the reference the hand-written encoder (json_response.go) matches byte
// for byte, and its path for BYTES outputs in JSON.
func encodeInferResponseReflect(resp *inference.Response, format outputFormat) (body []byte, jsonLen int, binary bool, err error) {
	out := inferResponseJSON{
		ModelName: resp.Model, ModelVersion: resp.Version, ID: resp.ID,
		Parameters: resp.Parameters, Outputs: make([]outputTensorJSON, 0, len(resp.Outputs)),
	}
	var tails [][]byte
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if sharedmemory.InSharedMemory(t.Parameters) {
			// Written to its region: name, datatype, shape and where.
			o := outputTensorJSON{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Parameters: maps.Clone(t.Parameters)}
			if o.Shape == nil {
				o.Shape = []int64{}
			}
			out.Outputs = append(out.Outputs, o)
			continue
		}
		if err := t.Validate(); err != nil {
			return nil, 0, false, apierr.Wrap(apierr.Internal, err, "model %q returned a malformed output", resp.Model)
		}
		o := outputTensorJSON{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape}
		if o.Shape == nil {
			o.Shape = []int64{}
		}
		if len(t.Parameters) > 0 {
			o.Parameters = maps.Clone(t.Parameters)
		}
		if format.isBinary(t.Name) {
			if o.Parameters == nil {
				o.Parameters = map[string]any{}
			}
			o.Parameters[paramBinaryDataSize] = len(t.Data)
			tails = append(tails, t.Data)
		} else if o.Data, err = appendJSONData(nil, t); err != nil {
			return nil, 0, false, apierr.New(apierr.InvalidArgument, "model %q output %q: %s", resp.Model, t.Name, err)
		}
		out.Outputs = append(out.Outputs, o)
	}
	header, err := json.Marshal(out)
	if err != nil {
		return nil, 0, false, apierr.Wrap(apierr.Internal, err, "model %q: cannot encode the response", resp.Model)
	}
	if tails == nil {
		return header, len(header), false, nil
	}
	return assembleBinaryResponse(header, tails), len(header), true, nil
}

// scanPlainElements is the fast path of decodeJSONData for data made only
// of (nested) arrays of numbers and booleans, the common case: it walks the
// bytes once instead of going through the token decoder. ok is false when
// the data holds anything else (strings, objects, null), and the caller
// decodes it the general way, which also produces the precise error. raw
// must be valid JSON (it comes from a decoded header).
func scanPlainElements(out []byte, raw json.RawMessage, dt tensor.Datatype, shape []int64, n int64) (_ []byte, ok bool, _ error) {
	var count int64
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '[' || c == ']' || c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9'):
		default:
			return nil, false, nil
		}
		j := i
		for j < len(raw) && raw[j] != ',' && raw[j] != ']' && raw[j] != ' ' && raw[j] != '\t' && raw[j] != '\n' && raw[j] != '\r' {
			j++
		}
		if count == n {
			return nil, true, fmt.Errorf("shape %v needs %d elements, data has more", shape, n)
		}
		var err error
		switch tok := raw[i:j]; tok[0] {
		case 't':
			out, err = appendElement(out, dt, true)
		case 'f':
			out, err = appendElement(out, dt, false)
		default:
			out, err = appendNumber(out, dt, tok)
		}
		if err != nil {
			return nil, true, fmt.Errorf("data element %d: %w", count, err)
		}
		count++
		i = j
	}
	if count != n {
		return nil, true, fmt.Errorf("shape %v needs %d elements, data has %d", shape, n, count)
	}
	return out, true, nil
}

// quoteNonFinite turns the bare tokens NaN, Infinity and -Infinity outside
// strings into the strings "NaN", "Infinity" and "-Infinity", which the
// element decoder accepts for floating-point tensors. Python's json module,
// and so tritonclient, writes them bare for non-finite floats; strict JSON
// has no such tokens. Headers without them are returned unchanged.
func quoteNonFinite(b []byte) []byte {
	if !bytes.Contains(b, []byte("NaN")) && !bytes.Contains(b, []byte("Infinity")) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out = append(out, c)
			continue
		}
		matched := false
		for _, tok := range [...]string{"NaN", "Infinity", "-Infinity"} {
			if bytes.HasPrefix(b[i:], []byte(tok)) {
				out = append(out, '"')
				out = append(out, tok...)
				out = append(out, '"')
				i += len(tok) - 1
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, c)
		}
	}
	return out
}
