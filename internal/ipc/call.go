package ipc

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Handler serves the requests a stub starts on its data socket: BLS calls
// (pb_utils.InferenceRequest.exec) and model control (pb_utils.load_model,
// unload_model, is_model_ready). Its methods are called on the connection's
// reader goroutine and must not block: they start the work and return, and
// the work answers through the call's Respond.
type Handler interface {
	Infer(call *Call)
	Control(call *ControlCall)
}

// Call is one BLS request from a stub.
type Call struct {
	// Request is the request the model built. Its tensors alias the frame.
	Request *inference.Request
	// Timeout is the request's timeout (InferenceRequest(timeout=...)); 0
	// means none.
	Timeout time.Duration
	// Decoupled is exec(decoupled=True): the caller takes 0..N responses.
	Decoupled bool
	// Parent is the context of the Execute the call was made under, so
	// that the caller can find what the call inherits from the batch
	// (through its values); nil when no such Execute is in flight.
	Parent context.Context

	c      *Client
	seq    uint32
	parent uint32     // seq of the EXECUTE named by the stub
	files  *callFiles // memory files holding the request's large inputs
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	ended  bool
}

// Context ends when the stub cancels the call (BLS_CANCEL), when its
// connection ends, or when the call's final response has been sent.
func (c *Call) Context() context.Context { return c.ctx }

// Respond sends one response to the stub: resp, or err as an error
// response (its message and Triton error code). final marks the call's last
// response; nothing may follow it. It reports whether the stub was sent the
// response (false once the call ended or the connection is gone).
//
// Outputs that are tensor.Shared views (memory files: replyfiles.go) go out
// of band, their files' descriptors with the frame; the response is
// released (inference.Response.Release) once written, or at once when it
// cannot be sent.
func (c *Call) Respond(resp *inference.Response, err error, final bool) bool {
	defer resp.Done()
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false
	}
	if final {
		c.ended = true
	}
	c.mu.Unlock()
	if final {
		defer c.c.endCall(c, err)
	}
	var shared []*tensor.Shared
	if c.c.shmThreshold.Load() > 0 {
		shared = sharedOutputs(resp)
	}
	bufs, n, fds := encodeCallResponse(resp, err, final, shared)
	for _, s := range shared {
		if s.Hold != nil {
			defer s.Hold()()
		}
	}
	putHeader(bufs[0], n, kindBLSResponse, flagReply, c.seq)
	putFDCount(bufs[0], len(fds))
	return c.c.write(context.Background(), kindBLSResponse, bufs, fds) == nil
}

// sharedOutputs are the Shared views among resp's outputs, by output
// index (nil for those in the frame).
func sharedOutputs(resp *inference.Response) []*tensor.Shared {
	if resp == nil {
		return nil
	}
	var out []*tensor.Shared
	for i := range resp.Outputs {
		if s := resp.Outputs[i].Shared; s != nil && len(resp.Outputs[i].Data) > 0 {
			if out == nil {
				out = make([]*tensor.Shared, len(resp.Outputs))
			}
			out[i] = s
		}
	}
	return out
}

// ControlCall is one model-control request from a stub.
type ControlCall struct {
	// Op is "load", "unload" or "ready".
	Op   string
	Name string
	// Version is is_model_ready's version ("" for the server's choice).
	Version string
	// Config is load_model's JSON configuration ("" for none).
	Config string
	// Files are load_model's override files, by "file:<path>" key.
	Files            map[string][]byte
	UnloadDependents bool

	c   *Client
	seq uint32
}

// Respond answers the request: ready is is_model_ready's result, err a
// failure, which the stub raises with its message.
func (c *ControlCall) Respond(ready bool, err error) {
	if err != nil {
		body, _ := json.Marshal(wireError{Op: c.Op, Message: err.Error(), Code: TritonCode(err)})
		buf := make([]byte, headerSize, headerSize+len(body))
		buf = append(buf, body...)
		putHeader(buf, len(body), kindModelControl, flagReply|flagError, c.seq)
		_ = c.c.write(context.Background(), kindModelControl, [][]byte{buf}, nil)
		return
	}
	body, _ := json.Marshal(wireControlReply{Ready: ready})
	buf := make([]byte, headerSize, headerSize+len(body))
	buf = append(buf, body...)
	putHeader(buf, len(body), kindModelControl, flagReply, c.seq)
	_ = c.c.write(context.Background(), kindModelControl, [][]byte{buf}, nil)
}

// SetHandler installs the handler for the requests the stub starts. Until
// it is set, they are answered with an error.
func (c *Client) SetHandler(h Handler) { c.handler.Store(&h) }

// errNoHandler answers calls on a connection without a handler.
var errNoHandler = apierr.New(apierr.Unsupported, "this stub connection serves no calls to other models")

// serveStubFrame handles a frame the stub started. It reports false for a
// kind the stub may not start.
func (c *Client) serveStubFrame(f frame) bool {
	var h Handler
	if p := c.handler.Load(); p != nil {
		h = *p
	}
	switch f.kind {
	case kindBLSInfer:
		call, err := c.decodeCall(f)
		if err != nil {
			call = &Call{c: c, seq: f.seq}
			call.files = newCallFiles(f.fds, c.reclaim)
			call.ctx, call.cancel = context.WithCancel(context.Background())
			call.Respond(nil, apierr.Wrap(apierr.InvalidArgument, err, "BLS request"), true)
			return true
		}
		if !c.startCall(call) {
			call.Respond(nil, c.Err(), true)
			return true
		}
		if h == nil {
			call.Respond(nil, errNoHandler, true)
			return true
		}
		h.Infer(call)
	case kindBLSCancel:
		c.mu.Lock()
		call := c.calls[f.seq]
		c.mu.Unlock()
		if call != nil {
			call.cancel()
		}
	case kindModelControl:
		cc := &ControlCall{c: c, seq: f.seq}
		var w wireControl
		if err := json.Unmarshal(f.body, &w); err != nil {
			cc.Respond(false, apierr.Wrap(apierr.InvalidArgument, err, "model control request"))
			return true
		}
		cc.Op, cc.Name, cc.Version, cc.Config, cc.Files, cc.UnloadDependents = w.Op, w.Name, w.Version, w.Config, w.Files, w.UnloadDependents
		if h == nil {
			cc.Respond(false, errNoHandler)
			return true
		}
		h.Control(cc)
	default:
		return false
	}
	return true
}

// startCall registers a call so that BLS_CANCEL and the end of the
// connection reach it; false when the connection has ended.
func (c *Client) startCall(call *Call) bool {
	call.ctx, call.cancel = context.WithCancel(context.Background())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		call.cancel()
		return false
	}
	c.calls[call.seq] = call
	call.Parent = c.parents[call.parentSeq()]
	return true
}

// endCall ends a call whose final response was sent; err is the
// response's error.
func (c *Client) endCall(call *Call, err error) {
	call.cancel()
	if err != nil && call.Request != nil {
		// The callee may not be done with the request (callfiles.go).
		call.files.releaseWhenUnused()
	} else {
		call.files.release()
	}
	c.mu.Lock()
	if c.calls[call.seq] == call {
		delete(c.calls, call.seq)
	}
	c.mu.Unlock()
}

// wireCall is the header of a BLS_INFER body:
//
//	u32 model length | model | u32 version length | version ("" for the server's choice) |
//	u64 timeout µs (0 for none) | u32 parent (seq of the EXECUTE it was made under, 0 for none) |
//	u8 decoupled
type wireCall struct {
	Model     string
	Version   string
	TimeoutUS int64
	Parent    uint32
	Decoupled bool
}

// parentSeq is kept on the call only until startCall has looked it up.
func (c *Call) parentSeq() uint32 { return c.parent }

type wireControl struct {
	Op               string            `json:"op"`
	Name             string            `json:"name"`
	Version          string            `json:"version"`
	Config           string            `json:"config"`
	Files            map[string][]byte `json:"files"`
	UnloadDependents bool              `json:"unload_dependents"`
}

type wireControlReply struct {
	Ready bool `json:"ready"`
}

// decodeCall decodes a BLS_INFER body:
//
//	u32 header length | header (wireCall) | an EXECUTE request body holding one request
//
// Inputs may be out of band, in the frame's descriptors (callfiles.go);
// the call owns them (so does the error path's caller when decoding fails).
func (c *Client) decodeCall(f frame) (*Call, error) {
	b := f.body
	if len(b) < 4 {
		return nil, errors.New("body too short")
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, fmt.Errorf("header of %d bytes overruns the %d-byte body", n, len(b))
	}
	h := cursor{b: b[4 : 4+n]}
	var w wireCall
	w.Model = h.str(h.u32())
	w.Version = h.str(h.u32())
	w.TimeoutUS = int64(h.u64())
	w.Parent = h.u32()
	w.Decoupled = h.u8() != 0
	if h.err != nil || len(h.b) != 0 {
		return nil, fmt.Errorf("header of %d bytes is malformed", n)
	}
	if w.Model == "" {
		return nil, errors.New("model_name is empty")
	}
	if w.TimeoutUS < 0 {
		return nil, fmt.Errorf("timeout %d µs is out of range", w.TimeoutUS)
	}
	files := newCallFiles(f.fds, c.reclaim)
	reqs, err := decodeRequests(b[4+n:], 4+int(n), files)
	if err != nil {
		return nil, err
	}
	if len(reqs) != 1 {
		return nil, fmt.Errorf("%d requests in one call", len(reqs))
	}
	r := reqs[0]
	r.Model, r.Version = w.Model, w.Version
	// The stub maps memory files passed with BLS_RESPONSE (replyfiles.go).
	r.OutputFiles = c.shmThreshold.Load() > 0
	return &Call{c: c, seq: f.seq, Request: r, Timeout: time.Duration(w.TimeoutUS) * time.Microsecond,
		Decoupled: w.Decoupled, parent: w.Parent, files: files}, nil
}

// decodeRequests decodes an EXECUTE request body (the layout encodeExecute
// writes) at offset base of its frame's body. Tensor data aliases body, or for an out-of-band input a
// mapping of one of files (the input is then Shared).
func decodeRequests(body []byte, base int, files *callFiles) ([]*inference.Request, error) {
	if len(body) < 4 {
		return nil, errors.New("request body has no meta length")
	}
	n := binary.LittleEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, fmt.Errorf("request meta of %d bytes overruns the %d-byte body", n, len(body))
	}
	c := cursor{b: body[4 : 4+n]}
	data := dataReader{b: body[4+n:], off: base + 4 + int(n)}
	count := c.u32()
	if uint64(count) > uint64(len(c.b)) {
		c.fail(errShort)
	}
	var reqs []*inference.Request
	for i := uint32(0); i < count && c.err == nil; i++ {
		idLen, pLen, nin, nout := c.u32(), c.u32(), c.u32(), c.u32()
		r := &inference.Request{ID: c.str(idLen)}
		if p := c.take(int(pLen)); len(p) > 0 {
			params, err := decodeParameters(p)
			if err != nil {
				return nil, fmt.Errorf("request %q: parameters: %w", r.ID, err)
			}
			r.Parameters = params
		}
		if uint64(nin) > uint64(len(c.b)) || uint64(nout) > uint64(len(c.b)) {
			c.fail(errShort)
		}
		if c.err != nil {
			break
		}
		r.Inputs = make([]tensor.Tensor, nin)
		for j := range r.Inputs {
			t := &r.Inputs[j]
			oob, size := c.tensorRecord("input", t)
			if oob {
				idx, off := c.u32(), c.u64()
				if c.err != nil {
					break
				}
				s, err := files.view(idx, off, size)
				if err != nil {
					c.fail(fmt.Errorf("input %q: out-of-band data: %w", t.Name, err))
					break
				}
				t.Data, t.Shared = s.Mem, s
				continue
			}
			if c.err != nil {
				break
			}
			d, ok := data.next(size)
			if !ok {
				return nil, fmt.Errorf("input %q declares %d bytes, %d remain", t.Name, size, len(data.b))
			}
			t.Data = d
		}
		for j := uint32(0); j < nout && c.err == nil; j++ {
			r.Outputs = append(r.Outputs, inference.RequestedOutput{Name: c.str(c.u32())})
		}
		r.Sequence = c.sequence()
		reqs = append(reqs, r)
	}
	if c.err != nil {
		return nil, fmt.Errorf("decode request: %w", c.err)
	}
	if len(c.b) != 0 || len(data.b) != 0 {
		return nil, fmt.Errorf("request body: %d meta and %d data bytes left over", len(c.b), len(data.b))
	}
	return reqs, nil
}

// sequence reads a sequence record (appendSequenceRecord's layout).
func (c *cursor) sequence() inference.Sequence {
	flags, kind, n := c.u32(), c.u8(), c.u64()
	str := c.str(c.u32())
	s := inference.Sequence{Start: flags&inference.FlagSequenceStart != 0, End: flags&inference.FlagSequenceEnd != 0}
	switch kind {
	case corrNumber:
		s.ID = inference.NumericID(n)
	case corrString:
		if len(str) > inference.MaxCorrelationIDLength {
			c.fail(inference.ErrCorrelationIDTooLong)
		}
		s.ID = inference.StringID(str)
	case corrNone:
	default:
		c.fail(fmt.Errorf("unknown correlation ID kind %d", kind))
	}
	if flags&^(inference.FlagSequenceStart|inference.FlagSequenceEnd) != 0 {
		c.fail(fmt.Errorf("unknown request flags %#x", flags))
	}
	return s
}

// decodeParameters decodes a JSON object of request parameters, keeping
// integers as int64 as the front ends do.
func decodeParameters(p []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	var raw map[string]any
	if err := d.Decode(&raw); err != nil {
		return nil, err
	}
	for k, v := range raw {
		num, ok := v.(json.Number)
		if !ok {
			switch v.(type) {
			case string, bool:
				continue
			}
			return nil, fmt.Errorf("%q must be a string, number or boolean", k)
		}
		if i, err := strconv.ParseInt(string(num), 10, 64); err == nil {
			raw[k] = i
			continue
		}
		f, err := num.Float64()
		if err != nil {
			return nil, fmt.Errorf("%q: number %s is out of range", k, num)
		}
		raw[k] = f
	}
	return raw, nil
}

// Response flags of a BLS_RESPONSE body.
const callFinal uint32 = 0x01

// encodeCallResponse builds a BLS_RESPONSE body:
//
//	u32 flags (0x01 final) | an EXECUTE reply body holding 0 or 1 responses
//
// A final response with neither resp nor err holds none (a decoupled
// callee's flag-only end). bufs[0] starts with headerSize bytes of room;
// the rest alias the outputs' data. An output with a Shared view in shared
// (by output index; nil for none) is out of band instead: its record
// points at the view's descriptor, one of fds, which go with the frame.
func encodeCallResponse(resp *inference.Response, err error, final bool, shared []*tensor.Shared) (bufs [][]byte, bodyLen int, fds []int) {
	var flags uint32
	if final {
		flags |= callFinal
	}
	b := make([]byte, headerSize, headerSize+256)
	b = binary.LittleEndian.AppendUint32(b, flags)
	b = binary.LittleEndian.AppendUint32(b, 0) // meta length, set below
	metaStart := len(b)
	bufs = [][]byte{nil}
	var data dataWriter
	switch {
	case err != nil:
		b = binary.LittleEndian.AppendUint32(b, 1)
		msg, code := err.Error(), TritonCode(err)
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(msg)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(code)))
		b = append(b, msg...)
		b = append(b, code...)
	case resp != nil:
		b = binary.LittleEndian.AppendUint32(b, 1)
		var params []byte
		if len(resp.Parameters) > 0 {
			params, _ = json.Marshal(resp.Parameters)
		}
		b = append(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(params)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(resp.Outputs)))
		b = append(b, params...)
		for i := range resp.Outputs {
			o := &resp.Outputs[i]
			if shared != nil && shared[i] != nil {
				s := shared[i]
				idx := slices.Index(fds, s.FD)
				if idx < 0 {
					idx = len(fds)
					fds = append(fds, s.FD)
				}
				b = appendTensorRecord(b, o.Name, datatypeCodes[o.Datatype]|outOfBand, o.Shape, len(o.Data))
				b = appendOutOfBand(b, idx, s.Offset)
				continue
			}
			b = appendTensorRecord(b, o.Name, datatypeCodes[o.Datatype], o.Shape, len(o.Data))
			bufs = data.add(bufs, o.Data)
		}
	default:
		b = binary.LittleEndian.AppendUint32(b, 0)
	}
	binary.LittleEndian.PutUint32(b[metaStart-4:], uint32(len(b)-metaStart))
	if data.n > 0 {
		b = append(b, zeros[:padding(len(b)-headerSize)]...)
	}
	bufs[0] = b
	bodyLen = len(b) - headerSize + data.n
	return bufs, bodyLen, fds
}

// TritonCode names err's class as a Triton error code, as a stub's
// TritonError carries it.
func TritonCode(err error) string {
	if errors.Is(err, context.Canceled) {
		return "CANCELLED"
	}
	var me *ModelError
	if errors.As(err, &me) && me.Code != "" {
		return me.Code
	}
	switch apierr.CodeOf(err) {
	case apierr.InvalidArgument:
		return "INVALID_ARG"
	case apierr.NotFound:
		return "NOT_FOUND"
	case apierr.Unavailable, apierr.DeadlineExceeded, apierr.ResourceExhausted:
		return "UNAVAILABLE"
	case apierr.Unsupported:
		return "UNSUPPORTED"
	}
	return "INTERNAL"
}
