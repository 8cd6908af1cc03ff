package rest

import (
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// addSubBody is the add_sub example's request as tritonclient sends it
// without the binary extension: two FP32 [1,16] inputs in JSON.
var addSubBody = func() []byte {
	vals := strings.TrimSuffix(strings.Repeat("1.5,", 16), ",")
	return []byte(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[` + vals +
		`]},{"name":"INPUT1","datatype":"FP32","shape":[1,16],"data":[` + vals + `]}]}`)
}()

func BenchmarkDecodeInferJSON(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeInferRequest(addSubBody, binaryReader{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeInferJSON(b *testing.B) {
	data := make([]byte, 64)
	out := func(name string) tensor.Tensor {
		return tensor.Tensor{Name: name, Datatype: tensor.FP32, Shape: []int64{1, 16}, Data: data}
	}
	resp := &inference.Response{Model: "add_sub", Version: "1", Outputs: []tensor.Tensor{out("OUTPUT0"), out("OUTPUT1")}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := encodeInferResponse(resp, outputFormat{}); err != nil {
			b.Fatal(err)
		}
	}
}
