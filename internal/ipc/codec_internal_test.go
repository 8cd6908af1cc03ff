package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// replyBuilder builds EXECUTE reply bodies the way the stub does.
type replyBuilder struct {
	meta []byte
	data [][]byte // the outputs' data, in meta order
}

func newReply(n int) *replyBuilder {
	return &replyBuilder{meta: binary.LittleEndian.AppendUint32(nil, uint32(n))}
}

func (r *replyBuilder) ok(params string, outs ...tensor.Tensor) *replyBuilder {
	r.meta = append(r.meta, 0)
	r.meta = binary.LittleEndian.AppendUint32(r.meta, uint32(len(params)))
	r.meta = binary.LittleEndian.AppendUint32(r.meta, uint32(len(outs)))
	r.meta = append(r.meta, params...)
	for _, t := range outs {
		r.meta = appendTensorRecord(r.meta, t.Name, datatypeCodes[t.Datatype], t.Shape, len(t.Data))
		r.data = append(r.data, t.Data)
	}
	return r
}

func (r *replyBuilder) fail(msg, code string) *replyBuilder {
	r.meta = append(r.meta, 1)
	r.meta = binary.LittleEndian.AppendUint32(r.meta, uint32(len(msg)))
	r.meta = binary.LittleEndian.AppendUint32(r.meta, uint32(len(code)))
	r.meta = append(r.meta, msg...)
	r.meta = append(r.meta, code...)
	return r
}

// body lays the reply out at the start of a frame body: each output's
// data at an aligned offset.
func (r *replyBuilder) body() []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(r.meta)))
	b = append(b, r.meta...)
	for _, d := range r.data {
		if len(d) > 0 {
			b = append(b, zeros[:padding(len(b))]...)
			b = append(b, d...)
		}
	}
	return b
}

func TestEncodeExecute(t *testing.T) {
	reqs := []*inference.Request{{
		ID:         "r1",
		Parameters: map[string]any{"k": "v"},
		Inputs: []tensor.Tensor{
			{Name: "A", Datatype: tensor.FP32, Shape: []int64{2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
			{Name: "E", Datatype: tensor.Int8, Shape: []int64{0}},
		},
		Outputs:  []inference.RequestedOutput{{Name: "Y"}},
		Sequence: inference.Sequence{ID: inference.StringID("s-1"), Start: true},
	}}
	bufs, n, err := encodeExecute(reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != 2 || string(bufs[1]) != string(reqs[0].Inputs[0].Data) {
		t.Fatalf("buffers = %d, want the header+meta and A's data (aliased)", len(bufs))
	}
	if got := len(bufs[0]) - headerSize + len(bufs[1]); got != n {
		t.Errorf("body length = %d, buffers hold %d", n, got)
	}
	c := cursor{b: bufs[0][headerSize:]}
	mlen := int(c.u32())
	if pad := len(bufs[0]) - headerSize - 4 - mlen; pad < 0 || pad >= dataAlign || (len(bufs[0])-headerSize)%dataAlign != 0 {
		t.Fatalf("meta length = %d and %d bytes after it: want the padding that aligns A's data", mlen, pad)
	}
	c.b = c.b[:mlen]
	if c.u32() != 1 || c.u32() != 2 || c.u32() != 9 || c.u32() != 2 || c.u32() != 1 || c.str(2) != "r1" || c.str(9) != `{"k":"v"}` {
		t.Fatal("request header mismatch")
	}
	if c.u32() != 1 || c.u8() != 11 || c.u8() != 1 || c.str(1) != "A" || c.u64() != 2 || c.u64() != 8 {
		t.Fatal("input A mismatch")
	}
	if c.u32() != 1 || c.u8() != 6 || c.u8() != 1 || c.str(1) != "E" || c.u64() != 0 || c.u64() != 0 {
		t.Fatal("input E mismatch")
	}
	if c.u32() != 1 || c.str(1) != "Y" {
		t.Fatal("outputs mismatch")
	}
	if c.u32() != inference.FlagSequenceStart || c.u8() != corrString || c.u64() != 0 || c.u32() != 3 || c.str(3) != "s-1" || len(c.b) != 0 || c.err != nil {
		t.Fatalf("sequence record mismatch or %d bytes left (%v)", len(c.b), c.err)
	}

	for _, tc := range []struct {
		seq  inference.Sequence
		kind uint8
	}{
		{inference.Sequence{}, corrNone},
		{inference.Sequence{ID: inference.NumericID(1<<63 + 5), End: true}, corrNumber},
		{inference.Sequence{ID: inference.StringID("")}, corrNone},
	} {
		bufs, _, err := encodeExecute([]*inference.Request{{Sequence: tc.seq}})
		if err != nil {
			t.Fatal(err)
		}
		c := cursor{b: bufs[0][headerSize+4+4+16:]}
		if c.u32() != tc.seq.Flags() || c.u8() != tc.kind || c.u64() != tc.seq.ID.N || c.u32() != 0 || len(c.b) != 0 {
			t.Errorf("%+v: sequence record mismatch", tc.seq)
		}
	}

	if _, _, err := encodeExecute([]*inference.Request{{Inputs: []tensor.Tensor{{Name: "X", Datatype: "COMPLEX"}}}}); err == nil {
		t.Error("unknown datatype accepted")
	}
}

func TestDecodeExecuteReply(t *testing.T) {
	reqs := []*inference.Request{{Model: "m", Version: "2", ID: "a"}, {Model: "m", ID: "b"}}
	y := tensor.Tensor{Name: "Y", Datatype: tensor.Int16, Shape: []int64{1, 2}, Data: []byte{1, 0, 2, 0}}
	body := newReply(2).ok(`{"p":1}`, y).fail("bad input", "INVALID_ARG").body()
	results, err := decodeExecuteReply(body, 0, reqs)
	if err != nil {
		t.Fatal(err)
	}
	want := &inference.Response{Model: "m", Version: "2", ID: "a", Parameters: map[string]any{"p": float64(1)}, Outputs: []tensor.Tensor{y}}
	if !reflect.DeepEqual(results[0].Response, want) || results[0].Err != nil {
		t.Errorf("result 0 = %+v, want %+v", results[0].Response, want)
	}
	var me *ModelError
	if !errors.As(results[1].Err, &me) || me.Error() != "bad input" || me.Code != "INVALID_ARG" || results[1].Response != nil {
		t.Errorf("result 1 = %+v", results[1])
	}

	bad := []struct {
		name string
		body []byte
		want string
	}{
		{"count", newReply(1).ok("").body(), "1 responses for 2 requests"},
		{"truncated", body[:len(body)-2], "declares 4 bytes"},
		{"short meta", []byte{3, 0, 0, 0, 2, 0}, "overruns"},
		{"leftover", append(body, 0), "left over"},
	}
	for _, tc := range bad {
		if _, err := decodeExecuteReply(tc.body, 0, reqs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}

	// A tensor whose data does not match its shape fails its request only.
	wrong := tensor.Tensor{Name: "W", Datatype: tensor.FP32, Shape: []int64{2}, Data: []byte{1, 2, 3, 4}}
	results, err = decodeExecuteReply(newReply(2).ok("", wrong).ok("").body(), 0, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err == nil || results[1].Err != nil {
		t.Errorf("results = %+v, want the first to fail validation", results)
	}
}

func BenchmarkCodecAddSub(b *testing.B) {
	data := make([]byte, 64)
	reqs := []*inference.Request{{ID: "x", Inputs: []tensor.Tensor{
		{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{16}, Data: data},
		{Name: "INPUT1", Datatype: tensor.FP32, Shape: []int64{16}, Data: data},
	}}}
	body := newReply(1).ok("",
		tensor.Tensor{Name: "OUTPUT0", Datatype: tensor.FP32, Shape: []int64{16}, Data: data},
		tensor.Tensor{Name: "OUTPUT1", Datatype: tensor.FP32, Shape: []int64{16}, Data: data},
	).body()
	for b.Loop() {
		if _, _, err := encodeExecute(reqs); err != nil {
			b.Fatal(err)
		}
		if _, err := decodeExecuteReply(body, 0, reqs); err != nil {
			b.Fatal(err)
		}
	}
}

// A BLS request uses the EXECUTE layout; its tensors travel in the frame,
// so a record that says its bytes are in a descriptor is refused.
func TestDecodeRequestsRoundTripAndRefusesOutOfBand(t *testing.T) {
	reqs := []*inference.Request{{
		ID:         "r1",
		Parameters: map[string]any{"k": "v"},
		Inputs:     []tensor.Tensor{{Name: "A", Datatype: tensor.FP32, Shape: []int64{2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		Outputs:    []inference.RequestedOutput{{Name: "Y"}},
	}}
	bufs, _, err := encodeExecute(reqs)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for _, b := range bufs {
		body = append(body, b...)
	}
	body = body[headerSize:]
	got, err := decodeRequests(body, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := got[0].Inputs[0]
	if got[0].ID != "r1" || in.Name != "A" || in.Datatype != tensor.FP32 || !reflect.DeepEqual(in.Shape, []int64{2}) || string(in.Data) != string(reqs[0].Inputs[0].Data) {
		t.Fatalf("decoded %+v", got[0])
	}
	// meta length, count, four counts, "r1", the parameters, A's name length.
	code := 4 + 4 + 16 + 2 + len(`{"k":"v"}`) + 4
	if body[code] != datatypeCodes[tensor.FP32] {
		t.Fatalf("byte %d is %d, not A's datatype code", code, body[code])
	}
	body[code] |= outOfBand
	if _, err := decodeRequests(body, 0, nil); err == nil || !strings.Contains(err.Error(), `input "A": out-of-band data`) {
		t.Fatalf("out-of-band input: %v", err)
	}
}

// Every in-band tensor's data starts 16-byte aligned in the frame body,
// whatever the tensors before it, so that the stub's numpy arrays over
// the frame take numpy's aligned loops.
func TestEncodeExecuteAlignsData(t *testing.T) {
	odd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i + 1)
		}
		return b
	}
	words := tensor.Tensor{Name: "S", Datatype: tensor.Bytes, Shape: []int64{2}, Data: []byte{1, 0, 0, 0, 'a', 2, 0, 0, 0, 'b', 'c'}}
	reqs := []*inference.Request{
		{ID: "a", Inputs: []tensor.Tensor{
			{Name: "B", Datatype: tensor.Bool, Shape: []int64{3}, Data: odd(3)},
			{Name: "I", Datatype: tensor.Int32, Shape: []int64{1, 16}, Data: odd(64)},
			words,
			{Name: "E", Datatype: tensor.FP32, Shape: []int64{0}},
			{Name: "D", Datatype: tensor.FP64, Shape: []int64{3}, Data: odd(24)},
		}},
		{ID: "request-b", Parameters: map[string]any{"x": "yz"}, Inputs: []tensor.Tensor{
			{Name: "H", Datatype: tensor.BF16, Shape: []int64{5}, Data: odd(10)},
			{Name: "U", Datatype: tensor.Uint8, Shape: []int64{1}, Data: odd(1)},
			{Name: "F", Datatype: tensor.FP32, Shape: []int64{2, 2}, Data: odd(16)},
		}, Outputs: []inference.RequestedOutput{{Name: "Y"}}},
		{Inputs: []tensor.Tensor{{Name: "I8", Datatype: tensor.Int8, Shape: []int64{7}, Data: odd(7)}, words}},
	}
	for n := 1; n <= len(reqs); n++ {
		bufs, bodyLen, err := encodeExecute(reqs[:n])
		if err != nil {
			t.Fatal(err)
		}
		body := bytes.Join(bufs, nil)[headerSize:]
		if len(body) != bodyLen {
			t.Fatalf("%d requests: body of %d bytes, length says %d", n, len(body), bodyLen)
		}
		got, err := decodeRequests(body, 0, nil)
		if err != nil {
			t.Fatalf("%d requests: %v", n, err)
		}
		for i, r := range got {
			for j, in := range r.Inputs {
				want := reqs[i].Inputs[j].Data
				if string(in.Data) != string(want) {
					t.Errorf("%d requests: request %d input %s = %v, want %v", n, i, in.Name, in.Data, want)
				}
				if len(in.Data) == 0 {
					continue
				}
				if off := uintptr(unsafe.Pointer(&in.Data[0])) - uintptr(unsafe.Pointer(&body[0])); off%dataAlign != 0 {
					t.Errorf("%d requests: request %d input %s at body offset %d, not %d-byte aligned", n, i, in.Name, off, dataAlign)
				}
			}
		}
	}
}

// The reply decoder finds data at the aligned offsets, counted from the
// start of the frame body the reply sits in (a RESPONSE frame's is at 8).
func TestDecodeExecuteReplyAlignsFromTheFrameBody(t *testing.T) {
	a := tensor.Tensor{Name: "A", Datatype: tensor.Uint8, Shape: []int64{3}, Data: []byte{1, 2, 3}}
	b := tensor.Tensor{Name: "B", Datatype: tensor.Int32, Shape: []int64{1}, Data: []byte{4, 5, 6, 7}}
	reply := newReply(1).ok("", a, b)
	meta := binary.LittleEndian.AppendUint32(nil, uint32(len(reply.meta)))
	meta = append(meta, reply.meta...)
	for _, base := range []int{0, 4, 8, 13} {
		frame := append(make([]byte, base), meta...)
		for _, d := range reply.data {
			frame = append(frame, zeros[:padding(len(frame))]...)
			frame = append(frame, d...)
		}
		results, err := decodeExecuteReply(frame[base:], base, []*inference.Request{{}})
		if err != nil {
			t.Fatalf("base %d: %v", base, err)
		}
		outs := results[0].Response.Outputs
		if string(outs[0].Data) != string(a.Data) || string(outs[1].Data) != string(b.Data) {
			t.Errorf("base %d: outputs %v %v", base, outs[0].Data, outs[1].Data)
		}
		// Without the padding the data is not where the rule puts it.
		if _, err := decodeExecuteReply(append(append([]byte(nil), meta...), 1, 2, 3, 4, 5, 6, 7), base, []*inference.Request{{}}); err == nil && (base+len(meta))%dataAlign != 0 {
			t.Errorf("base %d: unpadded data accepted", base)
		}
	}
}
