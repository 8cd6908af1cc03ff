package ipc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Datatype codes on the wire: Triton's type codes (model_config.proto
// DataType), with BYTES at TYPE_STRING's 13.
var datatypeCodes = map[tensor.Datatype]uint8{
	tensor.Bool: 1, tensor.Uint8: 2, tensor.Uint16: 3, tensor.Uint32: 4, tensor.Uint64: 5,
	tensor.Int8: 6, tensor.Int16: 7, tensor.Int32: 8, tensor.Int64: 9,
	tensor.FP16: 10, tensor.FP32: 11, tensor.FP64: 12, tensor.Bytes: 13, tensor.BF16: 14,
}

var codeDatatypes = func() (out [15]tensor.Datatype) {
	for d, c := range datatypeCodes {
		out[c] = d
	}
	return out
}()

// maxDims bounds a tensor's rank on the wire; it keeps a corrupt frame from
// causing a large allocation.
const maxDims = 64

// encodeExecute returns the EXECUTE body for reqs as buffers to write in
// order: the first holds room for the frame header (headerSize bytes, to be
// filled by the sender), the meta length and the meta; the rest alias the
// inputs' data, so tensors are not copied.
func encodeExecute(reqs []*inference.Request) (bufs [][]byte, bodyLen int, err error) {
	params := make([][]byte, len(reqs))
	size := headerSize + 4 + 4
	nData := 0
	for i, r := range reqs {
		if len(r.Parameters) > 0 {
			p, err := json.Marshal(r.Parameters)
			if err != nil {
				return nil, 0, fmt.Errorf("request %q: parameters: %w", r.ID, err)
			}
			params[i] = p
		}
		size += 16 + len(r.ID) + len(params[i])
		for j := range r.Inputs {
			in := &r.Inputs[j]
			if _, ok := datatypeCodes[in.Datatype]; !ok {
				return nil, 0, fmt.Errorf("request %q: input %q: unknown datatype %q", r.ID, in.Name, in.Datatype)
			}
			if len(in.Shape) > maxDims {
				return nil, 0, fmt.Errorf("request %q: input %q: %d dimensions, at most %d", r.ID, in.Name, len(in.Shape), maxDims)
			}
			size += tensorRecordSize(in.Name, len(in.Shape))
			if len(in.Data) > 0 {
				nData++
			}
		}
		for _, o := range r.Outputs {
			size += 4 + len(o.Name)
		}
		size += sequenceRecordSize(r.Sequence)
	}

	b := make([]byte, headerSize+4, size)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(reqs)))
	bufs = make([][]byte, 1, 1+nData)
	for i, r := range reqs {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.ID)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(params[i])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Inputs)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Outputs)))
		b = append(b, r.ID...)
		b = append(b, params[i]...)
		for j := range r.Inputs {
			in := &r.Inputs[j]
			b = appendTensorRecord(b, in.Name, datatypeCodes[in.Datatype], in.Shape, len(in.Data))
			if len(in.Data) > 0 {
				bufs = append(bufs, in.Data)
				bodyLen += len(in.Data)
			}
		}
		for _, o := range r.Outputs {
			b = appendString(b, o.Name)
		}
		b = appendSequenceRecord(b, r.Sequence)
	}
	binary.LittleEndian.PutUint32(b[headerSize:], uint32(len(b)-headerSize-4))
	bufs[0] = b
	bodyLen += len(b) - headerSize
	return bufs, bodyLen, nil
}

// tensorRecordSize is the size of a tensor record in a meta:
// uint32 name length | uint8 datatype code | uint8 ndim | name | int64 dims[ndim] | uint64 data length.
func tensorRecordSize(name string, ndim int) int { return 6 + len(name) + 8*ndim + 8 }

func appendTensorRecord(b []byte, name string, code uint8, shape []int64, n int) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, code, uint8(len(shape)))
	b = append(b, name...)
	for _, d := range shape {
		b = binary.LittleEndian.AppendUint64(b, uint64(d))
	}
	return binary.LittleEndian.AppendUint64(b, uint64(n))
}

// Correlation ID kinds in a sequence record.
const (
	corrNone   = 0
	corrNumber = 1
	corrString = 2
)

// sequenceRecordSize is the size of a request's sequence record:
// u32 flags | u8 correlation ID kind | u64 numeric ID | u32 string ID length | string ID.
func sequenceRecordSize(s inference.Sequence) int { return 17 + len(s.ID.S) }

func appendSequenceRecord(b []byte, s inference.Sequence) []byte {
	b = binary.LittleEndian.AppendUint32(b, s.Flags())
	kind := uint8(corrNone)
	switch {
	case s.ID.IsString && s.ID.S != "":
		kind = corrString
	case !s.ID.IsString && s.ID.N != 0:
		kind = corrNumber
	}
	b = append(b, kind)
	b = binary.LittleEndian.AppendUint64(b, s.ID.N)
	return appendString(b, s.ID.S)
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// Response entry statuses in an EXECUTE reply or RESPONSE meta.
const (
	statusOutputs  = 0
	statusError    = 1
	statusStreamed = 2 // the request answers through its response sender
)

// errShort reports a meta that ends in the middle of a field.
var errShort = errors.New("meta truncated")

// cursor reads little-endian fields from an EXECUTE meta. The first failure
// sticks in err; later reads return zero values.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.b) {
		c.err = errShort
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() uint8 {
	if v := c.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if v := c.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if v := c.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (c *cursor) str(n uint32) string {
	if uint64(n) > uint64(len(c.b)) {
		c.fail(errShort)
		return ""
	}
	return string(c.take(int(n)))
}

func (c *cursor) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// decodeExecuteReply turns an EXECUTE reply body into one Result per
// request. Output data aliases body.
func decodeExecuteReply(body []byte, reqs []*inference.Request) ([]Result, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("execute reply of %d bytes has no meta length", len(body))
	}
	n := binary.LittleEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, fmt.Errorf("execute reply meta of %d bytes overruns the %d-byte body", n, len(body))
	}
	c := cursor{b: body[4 : 4+n]}
	data := body[4+n:]

	if got := c.u32(); c.err == nil && int(got) != len(reqs) {
		return nil, fmt.Errorf("execute reply has %d responses for %d requests", got, len(reqs))
	}
	results := make([]Result, len(reqs))
	for i := 0; i < len(reqs) && c.err == nil; i++ {
		req := reqs[i]
		status, n1, n2 := c.u8(), c.u32(), c.u32()
		if status == statusStreamed {
			results[i] = Result{Streamed: true}
			continue
		}
		if status != 0 {
			msg, code := c.str(n1), c.str(n2)
			if code == "" {
				code = "INTERNAL"
			}
			results[i] = Result{Err: &ModelError{Message: msg, Code: code}}
			continue
		}
		resp := &inference.Response{Model: req.Model, Version: req.Version, ID: req.ID}
		if p := c.take(int(n1)); len(p) > 0 {
			if err := json.Unmarshal(p, &resp.Parameters); err != nil {
				c.fail(fmt.Errorf("response %d parameters: %w", i, err))
			}
		}
		if uint64(n2) > uint64(len(c.b)) { // every output takes more than a byte
			c.fail(errShort)
		}
		if c.err != nil {
			break
		}
		resp.Outputs = make([]tensor.Tensor, n2)
		var bad error
		for j := range resp.Outputs {
			t := &resp.Outputs[j]
			nameLen, code, ndim := c.u32(), c.u8(), c.u8()
			t.Name = c.str(nameLen)
			if int(code) >= len(codeDatatypes) || codeDatatypes[code] == "" {
				c.fail(fmt.Errorf("output %q: unknown datatype code %d", t.Name, code))
			}
			if ndim > maxDims {
				c.fail(fmt.Errorf("output %q: %d dimensions, at most %d", t.Name, ndim, maxDims))
			}
			if c.err != nil {
				break
			}
			t.Datatype = codeDatatypes[code]
			t.Shape = make([]int64, ndim)
			for k := range t.Shape {
				t.Shape[k] = int64(c.u64())
			}
			size := c.u64()
			if c.err != nil {
				break
			}
			if size > uint64(len(data)) {
				return nil, fmt.Errorf("execute reply: output %q declares %d bytes, %d remain", t.Name, size, len(data))
			}
			t.Data = data[:size:size]
			data = data[size:]
			if err := t.Validate(); err != nil && bad == nil {
				bad = err
			}
		}
		if bad != nil {
			// The stub and the server disagree about a tensor: a bug, but one
			// that concerns this request only.
			results[i] = Result{Err: &ModelError{Op: "encode responses", Message: "the stub sent an invalid output: " + bad.Error(), Code: "INTERNAL"}}
			continue
		}
		results[i] = Result{Response: resp}
	}
	if c.err != nil {
		return nil, fmt.Errorf("decode execute reply: %w", c.err)
	}
	if len(c.b) != 0 || len(data) != 0 {
		return nil, fmt.Errorf("execute reply: %d meta and %d data bytes left over", len(c.b), len(data))
	}
	return results, nil
}

// Control messages (INIT, HEALTH, error replies) are JSON.

// wireError is the body of an error reply.
type wireError struct {
	Op        string `json:"op,omitempty"`
	Type      string `json:"type,omitempty"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
	Code      string `json:"code,omitempty"`
}

func (w *wireError) modelError() *ModelError {
	code := w.Code
	if code == "" {
		code = "INTERNAL"
	}
	return &ModelError{Op: w.Op, Type: w.Type, Message: w.Message, Traceback: w.Traceback, Code: code}
}

type wireInit struct {
	ModelFile string            `json:"model_file"`
	Args      map[string]string `json:"args"`
}

type wireInitReply struct {
	HasHealthHook bool   `json:"has_health_hook"`
	HookName      string `json:"hook_name"`
}

type wireHealthReply struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}
