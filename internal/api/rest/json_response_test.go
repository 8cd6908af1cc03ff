package rest

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// The hand-written encoder writes what encoding/json writes, byte for
// byte, errors included.
func TestEncodeInferResponseMatchesReflect(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	i32 := func(vs ...int32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		return b
	}
	out := func(name string, dt tensor.Datatype, shape []int64, data []byte, params map[string]any) tensor.Tensor {
		return tensor.Tensor{Name: name, Datatype: dt, Shape: shape, Data: data, Parameters: params}
	}
	cases := map[string]struct {
		resp   inference.Response
		format outputFormat
	}{
		"plain": {resp: inference.Response{Model: "simple", Version: "1", Outputs: []tensor.Tensor{
			out("OUTPUT0", tensor.Int32, []int64{1, 4}, i32(1, -2, 3, math.MaxInt32), nil),
			out("OUTPUT1", tensor.FP32, []int64{4}, f32(1.5, float32(math.NaN()), float32(math.Inf(-1)), 1e20), nil)}}},
		"id, parameters, no version": {resp: inference.Response{Model: "m", ID: "req-<1>&\"x\"", Parameters: map[string]any{"z": 1, "a": "é", "b": true, "f": 0.25},
			Outputs: []tensor.Tensor{out("O", tensor.Bool, []int64{2}, []byte{1, 0}, map[string]any{"k": "v"})}}},
		"no outputs":     {resp: inference.Response{Model: "m"}},
		"nil shape":      {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("O", tensor.FP64, nil, make([]byte, 8), nil)}}},
		"unicode names":  {resp: inference.Response{Model: "mödel\u2028", Outputs: []tensor.Tensor{out("Ö\n", tensor.Uint8, []int64{1}, []byte{7}, nil)}}},
		"binary default": {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{2}, i32(1, 2), nil), out("B", tensor.Int32, []int64{1}, i32(3), map[string]any{"p": int64(2)})}}, format: outputFormat{binaryDefault: true}},
		"binary one":     {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{2}, i32(1, 2), nil), out("B", tensor.FP32, []int64{1}, f32(3), nil)}}, format: outputFormat{binary: map[string]bool{"B": true}}},
		"shared memory": {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{2}, nil,
			map[string]any{"shared_memory_region": "r", "shared_memory_byte_size": int64(8)})}}},
		"bytes":              {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("S", tensor.Bytes, []int64{1}, []byte{3, 0, 0, 0, '<', 'a', '>'}, nil)}}},
		"bytes binary":       {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("S", tensor.Bytes, []int64{1}, []byte{1, 0, 0, 0, 'a'}, nil)}}, format: outputFormat{binaryDefault: true}},
		"malformed output":   {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{3}, i32(1), nil)}}},
		"bad parameter":      {resp: inference.Response{Model: "m", Parameters: map[string]any{"x": math.NaN()}, Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{1}, i32(1), nil)}}},
		"bad output param":   {resp: inference.Response{Model: "m", Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{1}, i32(1), map[string]any{"c": make(chan int)})}}},
		"param then invalid": {resp: inference.Response{Model: "m", Parameters: map[string]any{"x": math.Inf(1)}, Outputs: []tensor.Tensor{out("A", tensor.Int32, []int64{2}, i32(1), nil)}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, gotLen, gotBin, gotErr := encodeInferResponse(&c.resp, c.format)
			want, wantLen, wantBin, wantErr := encodeInferResponseReflect(&c.resp, c.format)
			if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Fatalf("error %v, encoding/json %v", gotErr, wantErr)
			}
			if !bytes.Equal(got, want) || gotLen != wantLen || gotBin != wantBin {
				t.Fatalf("got  %q (%d, %t)\nwant %q (%d, %t)", got, gotLen, gotBin, want, wantLen, wantBin)
			}
		})
	}
}
