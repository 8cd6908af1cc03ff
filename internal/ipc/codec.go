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
	bufs, bodyLen, _, err = encodeExecuteArena(reqs, 0, nil, nil)
	return bufs, bodyLen, err
}

// encodeExecuteArena is encodeExecute with inputs of at least threshold
// bytes (threshold > 0) copied into the input arena (arena.go), which
// must hold largeInputBytes(reqs, threshold); their records point at
// descriptor 0, the arena's. With a nil arena every tensor is in the frame.
// used says whether any input went into the arena. With a region table
// (regions.go), inputs in client shared memory point at their region's
// descriptor and requested outputs carry their rooms.
func encodeExecuteArena(reqs []*inference.Request, threshold int, inArena *arena, rt *regionTable) (bufs [][]byte, bodyLen int, used bool, err error) {
	if inArena == nil {
		threshold = 0
	}
	off := 0
	params := make([][]byte, len(reqs))
	size := headerSize + 4 + 4
	if rt != nil {
		size += rt.metaSize()
	}
	nData := 0
	for i, r := range reqs {
		if len(r.Parameters) > 0 {
			p, err := json.Marshal(r.Parameters)
			if err != nil {
				return nil, 0, false, fmt.Errorf("request %q: parameters: %w", r.ID, err)
			}
			params[i] = p
		}
		size += 16 + len(r.ID) + len(params[i])
		for j := range r.Inputs {
			in := &r.Inputs[j]
			if _, ok := datatypeCodes[in.Datatype]; !ok {
				return nil, 0, false, fmt.Errorf("request %q: input %q: unknown datatype %q", r.ID, in.Name, in.Datatype)
			}
			if len(in.Shape) > maxDims {
				return nil, 0, false, fmt.Errorf("request %q: input %q: %d dimensions, at most %d", r.ID, in.Name, len(in.Shape), maxDims)
			}
			size += tensorRecordSize(in.Name, len(in.Shape)) + 12
			if len(in.Data) > 0 {
				nData++
			}
		}
		for _, o := range r.Outputs {
			size += 4 + len(o.Name)
			if rt != nil {
				size += 20
			}
		}
		size += sequenceRecordSize(r.Sequence)
	}

	b := make([]byte, headerSize+4, size+dataAlign)
	if rt != nil {
		b = rt.appendMeta(b)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(reqs)))
	bufs = make([][]byte, 1, 1+2*nData)
	var data dataWriter // the in-band tensor data, from the data section's aligned start
	for i, r := range reqs {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.ID)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(params[i])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Inputs)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Outputs)))
		b = append(b, r.ID...)
		b = append(b, params[i]...)
		for j := range r.Inputs {
			in := &r.Inputs[j]
			if sharedInput(rt, in) {
				b = appendTensorRecord(b, in.Name, datatypeCodes[in.Datatype]|outOfBand, in.Shape, len(in.Data))
				b = appendOutOfBand(b, rt.index(in.Shared), in.Shared.Offset)
				continue
			}
			if threshold > 0 && len(in.Data) >= threshold {
				copy(inArena.mem[off:], in.Data)
				b = appendTensorRecord(b, in.Name, datatypeCodes[in.Datatype]|outOfBand, in.Shape, len(in.Data))
				b = appendOutOfBand(b, 0, uint64(off))
				off += alignUp(len(in.Data))
				used = true
				continue
			}
			b = appendTensorRecord(b, in.Name, datatypeCodes[in.Datatype], in.Shape, len(in.Data))
			bufs = data.add(bufs, in.Data)
		}
		for _, o := range r.Outputs {
			b = appendString(b, o.Name)
			if rt != nil {
				b = rt.appendDest(b, o.Dest)
			}
		}
		b = appendSequenceRecord(b, r.Sequence)
	}
	binary.LittleEndian.PutUint32(b[headerSize:], uint32(len(b)-headerSize-4))
	if data.n > 0 {
		b = append(b, zeros[:padding(len(b)-headerSize)]...)
	}
	bufs[0] = b
	bodyLen += len(b) - headerSize + data.n
	return bufs, bodyLen, used, nil
}

// dataAlign is the alignment of in-band tensor data in a frame body: each
// tensor's data starts at an offset from the body's first byte that is a
// multiple of it, so that the stub's numpy arrays over the frame are
// aligned (see the package documentation).
const dataAlign = 16

// zeros is the padding before an in-band tensor's data.
var zeros [dataAlign]byte

// padding is the number of zero bytes that take offset n to the next
// multiple of dataAlign.
func padding(n int) int { return -n & (dataAlign - 1) }

// dataWriter lays out the data section of an EXECUTE-layout body: n
// counts its bytes so far, from its start, which the meta's padding
// aligns.
type dataWriter struct{ n int }

// add appends d to bufs, after the padding that aligns it; an empty d
// takes no room.
func (w *dataWriter) add(bufs [][]byte, d []byte) [][]byte {
	if len(d) == 0 {
		return bufs
	}
	if p := padding(w.n); p > 0 {
		bufs = append(bufs, zeros[:p])
		w.n += p
	}
	w.n += len(d)
	return append(bufs, d)
}

// dataReader reads the data section of an EXECUTE-layout body in meta
// order, skipping the padding before each tensor's data.
type dataReader struct {
	b   []byte
	off int // offset of b[0] from the start of the frame body
}

// next returns the next tensor's n bytes; false if the body ends first.
func (r *dataReader) next(n uint64) ([]byte, bool) {
	if n == 0 {
		return r.b[:0:0], true
	}
	p := padding(r.off)
	if uint64(p)+n > uint64(len(r.b)) {
		return nil, false
	}
	end := p + int(n)
	v := r.b[p:end:end]
	r.b = r.b[end:]
	r.off += end
	return v, true
}

// largeInputBytes is the input arena room reqs need: their inputs of at
// least threshold bytes, each at an aligned offset, but for those that
// travel as their region's descriptor (shared).
func largeInputBytes(reqs []*inference.Request, threshold int, shared bool) int {
	n := 0
	for _, r := range reqs {
		for j := range r.Inputs {
			if shared && r.Inputs[j].Shared != nil {
				continue
			}
			if d := len(r.Inputs[j].Data); d >= threshold {
				n += alignUp(d)
			}
		}
	}
	return n
}

// alignUp rounds n up to the 64-byte alignment of arena offsets (a cache
// line, and more than any numpy dtype needs).
func alignUp(n int) int { return (n + 63) &^ 63 }

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

// tensorRecord reads a tensor record up to its data into t: name, datatype
// code, shape, and the byte count it returns. oob reports the code's
// out-of-band bit (the bytes are in a descriptor); role ("input",
// "output") names the tensor in errors.
func (c *cursor) tensorRecord(role string, t *tensor.Tensor) (oob bool, size uint64) {
	nameLen, code, ndim := c.u32(), c.u8(), c.u8()
	t.Name = c.str(nameLen)
	oob = code&outOfBand != 0
	code &^= outOfBand
	if int(code) >= len(codeDatatypes) || codeDatatypes[code] == "" {
		c.fail(fmt.Errorf("%s %q: unknown datatype code %d", role, t.Name, code))
	}
	if ndim > maxDims {
		c.fail(fmt.Errorf("%s %q: %d dimensions, at most %d", role, t.Name, ndim, maxDims))
	}
	if c.err != nil {
		return false, 0
	}
	t.Datatype = codeDatatypes[code]
	t.Shape = make([]int64, ndim)
	for k := range t.Shape {
		t.Shape[k] = int64(c.u64())
	}
	return oob, c.u64()
}

func (c *cursor) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// decodeExecuteReply turns an EXECUTE reply body into one Result per
// request; base is its offset in its frame's body (which the data's
// alignment counts from). Output data aliases body.
func decodeExecuteReply(body []byte, base int, reqs []*inference.Request) ([]Result, error) {
	results, _, err := decodeExecuteReplyArena(body, base, nil, lease{}, nil, 0, reqs)
	return results, err
}

// decodeExecuteReplyArena is decodeExecuteReply for a frame that may have
// out-of-band outputs: in the arenas of the request's lease, or in
// descriptors that came with the reply (shm.go). Their bytes are copied
// out, but for a batch that takes output files (rf non-nil), whose outputs
// in the stub's files are Shared views of them (replyfiles.go). large is
// the total size of the outputs of at least threshold bytes (threshold >
// 0) that were not in such files, which the next output arena should hold.
func decodeExecuteReplyArena(body []byte, base int, fds []int, l lease, rf *replyFiles, threshold int, reqs []*inference.Request) (_ []Result, large int, _ error) {
	if len(body) < 4 {
		return nil, 0, fmt.Errorf("execute reply of %d bytes has no meta length", len(body))
	}
	n := binary.LittleEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, 0, fmt.Errorf("execute reply meta of %d bytes overruns the %d-byte body", n, len(body))
	}
	c := cursor{b: body[4 : 4+n]}
	data := dataReader{b: body[4+n:], off: base + 4 + int(n)}

	if got := c.u32(); c.err == nil && int(got) != len(reqs) {
		return nil, 0, fmt.Errorf("execute reply has %d responses for %d requests", got, len(reqs))
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
			oob, size := c.tensorRecord("output", t)
			if c.err != nil {
				break
			}
			if oob {
				// Its bytes are in a descriptor, not in the data section.
				t.Data, t.Shared = replyData(&c, fds, l, rf, i, size)
			} else if c.err == nil {
				d, ok := data.next(size)
				if !ok {
					return nil, 0, fmt.Errorf("execute reply: output %q declares %d bytes, %d remain", t.Name, size, len(data.b))
				}
				t.Data = d
			}
			if c.err != nil {
				break
			}
			if threshold > 0 && len(t.Data) >= threshold && t.Shared == nil {
				large += alignUp(len(t.Data))
			}
			if err := t.Validate(); err != nil && bad == nil {
				bad = err
			}
		}
		if bad != nil {
			// The stub and the server disagree about a tensor: a bug, but one
			// that concerns this request only.
			if rf != nil {
				rf.drop(i)
			}
			results[i] = Result{Err: &ModelError{Op: "encode responses", Message: "the stub sent an invalid output: " + bad.Error(), Code: "INTERNAL"}}
			continue
		}
		if rf != nil {
			resp.Release = rf.releaser(i)
		}
		results[i] = Result{Response: resp}
	}
	if c.err != nil {
		return nil, 0, fmt.Errorf("decode execute reply: %w", c.err)
	}
	if len(c.b) != 0 || len(data.b) != 0 {
		return nil, 0, fmt.Errorf("execute reply: %d meta and %d data bytes left over", len(c.b), len(data.b))
	}
	return results, large, nil
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
	// ShmThreshold is the output size from which the stub sends tensors out
	// of band (shm.go); absent means never.
	ShmThreshold int `json:"shm_threshold,omitempty"`
}

type wireInitReply struct {
	HasHealthHook bool   `json:"has_health_hook"`
	HookName      string `json:"hook_name"`
}

type wireHealthReply struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Traceback is set when the hook raised.
	Traceback string `json:"traceback,omitempty"`
}
