package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// The bodies in testdata/tritonclient were built by tritonclient's own
// request builder (testdata/tritonclient/gen.py), so these tests decode
// exactly what tritonclient sends.

func tritonclientCase(t *testing.T, name string) (body []byte, headers []string) {
	t.Helper()
	dir := filepath.Join("testdata", "tritonclient")
	manifest, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lengths map[string]*int
	if err := json.Unmarshal(manifest, &lengths); err != nil {
		t.Fatal(err)
	}
	body, err = os.ReadFile(filepath.Join(dir, name+".body"))
	if err != nil {
		t.Fatal(err)
	}
	if n := lengths[name]; n != nil {
		headers = []string{headerContentLength, strconv.Itoa(*n)}
	}
	return body, headers
}

func bytesElems(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = tensor.AppendBytesElement(b, []byte(e))
	}
	return b
}

func TestTritonclientRequests(t *testing.T) {
	tests := []struct {
		name       string
		want       *inference.Request
		wantBinary map[string]bool // output name → sent in binary
	}{
		{
			name: "add_sub_binary",
			want: &inference.Request{Model: "add_sub", ID: "req-1", Inputs: []tensor.Tensor{
				{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{4}, Data: bytes.Join([][]byte{f32(1), f32(2), f32(3), f32(4)}, nil)},
				{Name: "INPUT1", Datatype: tensor.FP32, Shape: []int64{4}, Data: bytes.Join([][]byte{f32(0.5), f32(-1), f32(10), f32(0)}, nil)},
			}},
			wantBinary: map[string]bool{"OUT_INPUT0": true, "OUT_INPUT1": true},
		},
		{
			name: "mixed",
			want: &inference.Request{Model: "add_sub", ID: "42",
				Parameters: map[string]any{"timeout": int64(1000), "note": "hi", "count": int64(3)},
				Inputs: []tensor.Tensor{
					{Name: "TEXT", Datatype: tensor.Bytes, Shape: []int64{1, 2}, Data: bytesElems("hello", "\xff\x00z")},
					{Name: "SMALL", Datatype: tensor.Int8, Shape: []int64{2, 2}, Data: []byte{0x80, 0, 1, 0x7f}},
					{Name: "HALF", Datatype: tensor.FP16, Shape: []int64{3}, Data: bytes.Join([][]byte{le16(0x3e00), le16(0xc000), le16(0x7bff)}, nil)},
				},
				Outputs: []inference.RequestedOutput{{Name: "OUT_BIN"}, {Name: "OUT_JSON"}},
			},
			wantBinary: map[string]bool{"OUT_BIN": true, "OUT_JSON": false},
		},
		{
			name: "all_json",
			want: &inference.Request{Model: "add_sub", Inputs: []tensor.Tensor{
				{Name: "X", Datatype: tensor.Uint16, Shape: []int64{2, 3}, Data: bytes.Join([][]byte{le16(0), le16(1), le16(2), le16(3), le16(4), le16(5)}, nil)},
				{Name: "S", Datatype: tensor.Bytes, Shape: []int64{1}, Data: bytesElems("héllo")},
			}, Outputs: []inference.RequestedOutput{{Name: "Y"}}},
			wantBinary: map[string]bool{"Y": false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, headers := tritonclientCase(t, tt.name)
			e := newEnv(t, readySnapshot(), Config{})
			e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) {
				return &inference.Response{}, nil
			}
			rec := e.do("POST", "/v2/models/add_sub/infer", body, headers...)
			if rec.Code != 200 {
				t.Fatalf("infer = %d %s", rec.Code, rec.Body)
			}
			if got := e.models.lastRequest(t); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request = %#v\nwant %#v", got, tt.want)
			}
			_, format, err := decodeInferRequest(splitForTest(t, body, headers))
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.wantBinary {
				if format.isBinary(name) != want {
					t.Errorf("output %s binary = %v, want %v", name, !want, want)
				}
			}
		})
	}
}

func splitForTest(t *testing.T, body []byte, headers []string) ([]byte, binaryReader) {
	t.Helper()
	var value string
	if len(headers) == 2 {
		value = headers[1]
	}
	header, bin, err := splitInferBody(body, value, len(headers) == 2)
	if err != nil {
		t.Fatal(err)
	}
	return header, bin
}

// parseWithTritonclient is run by python: it parses a response with
// tritonclient's InferResult and prints every output as a list.
const parseWithTritonclient = `
import json, sys
import numpy as np
from tritonclient.http import InferResult
body = open(sys.argv[1], "rb").read()
hl = int(sys.argv[2]) if sys.argv[2] != "-" else None
r = InferResult.from_response_body(body, header_length=hl)
out = {}
for o in r.get_response()["outputs"]:
    a = r.as_numpy(o["name"])
    if a.dtype == np.object_:
        out[o["name"]] = {"shape": list(a.shape), "data": [x.hex() for x in a.flatten()]}
    else:
        out[o["name"]] = {"shape": list(a.shape), "dtype": str(a.dtype), "data": [repr(x.item()) for x in a.flatten()]}
out["_id"] = r.get_response().get("id")
print(json.dumps(out, sort_keys=True))
`

// TestTritonclientParsesResponses feeds vigil's responses to tritonclient's
// own parser. It needs python3 with tritonclient and numpy (VIGIL_PYTHON or
// python3 on PATH); it is skipped without them.
func TestTritonclientParsesResponses(t *testing.T) {
	python := os.Getenv("VIGIL_PYTHON")
	if python == "" {
		python = "python3"
	}
	if err := exec.Command(python, "-c", "import tritonclient.http, numpy").Run(); err != nil {
		t.Skipf("tritonclient is not importable with %s: %v", python, err)
	}
	outputs := []tensor.Tensor{
		{Name: "OUT_BIN", Datatype: tensor.Bytes, Shape: []int64{1, 2}, Data: bytesElems("\xff\x00z", "ok")},
		{Name: "OUT_JSON", Datatype: tensor.FP32, Shape: []int64{2, 2}, Data: bytes.Join([][]byte{
			f32(1.5), f32(float32(math.NaN())), f32(float32(math.Inf(-1))), f32(0.1)}, nil)},
		{Name: "OUT_HALF", Datatype: tensor.FP16, Shape: []int64{1}, Data: le16(0x3e00)},
	}
	want := `{"OUT_BIN": {"data": ["ff007a", "6f6b"], "shape": [1, 2]}, ` +
		`"OUT_HALF": {"data": ["1.5"], "dtype": "float16", "shape": [1]}, ` +
		`"OUT_JSON": {"data": ["1.5", "nan", "-inf", "0.10000000149011612"], "dtype": "float32", "shape": [2, 2]}, "_id": "42"}`
	for _, name := range []string{"mixed", "all_json"} {
		t.Run(name, func(t *testing.T) {
			body, headers := tritonclientCase(t, name)
			e := newEnv(t, readySnapshot(), Config{})
			e.models.InferFunc = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
				return &inference.Response{Model: req.Model, Version: "1", Outputs: outputs}, nil
			}
			if name == "all_json" {
				// A JSON-only client cannot receive the non-UTF-8 output.
				e.models.InferFunc = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
					return &inference.Response{Model: req.Model, Version: "1", Outputs: outputs[1:]}, nil
				}
			}
			rec := e.do("POST", "/v2/models/add_sub/infer", body, headers...)
			if rec.Code != 200 {
				t.Fatalf("infer = %d %s", rec.Code, rec.Body)
			}
			file := filepath.Join(t.TempDir(), "resp")
			if err := os.WriteFile(file, rec.Body.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			hl := rec.Header().Get(headerContentLength)
			if hl == "" {
				hl = "-"
			}
			out, err := exec.Command(python, "-c", parseWithTritonclient, file, hl).CombinedOutput()
			if err != nil {
				t.Fatalf("tritonclient could not parse the response: %v\n%s", err, out)
			}
			got := strings.TrimSpace(string(out))
			w := want
			if name == "all_json" {
				w = `{"OUT_HALF": {"data": ["1.5"], "dtype": "float16", "shape": [1]}, ` +
					`"OUT_JSON": {"data": ["1.5", "nan", "-inf", "0.10000000149011612"], "dtype": "float32", "shape": [2, 2]}, "_id": null}`
			}
			if got != w {
				t.Errorf("tritonclient read\n%s\nwant\n%s", got, w)
			}
		})
	}
}
