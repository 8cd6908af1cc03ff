package model

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/tensor"
)

const batchedConfig = `
name: "m"
backend: "python"
max_batch_size: 4
input [
  { name: "A" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "B" data_type: TYPE_INT32 dims: [ -1 ] optional: true },
  { name: "R" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } optional: true }
]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
`

func fp32s(name string, shape ...int64) tensor.Tensor {
	n, _ := tensor.ElementCount(shape)
	return tensor.Tensor{Name: name, Datatype: tensor.FP32, Shape: shape, Data: make([]byte, 4*n)}
}

func TestCheckRequest(t *testing.T) {
	cfg, err := modelconfig.ParseConfig([]byte(batchedConfig), "m/config.pbtxt")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		inputs   []tensor.Tensor
		outputs  []inference.RequestedOutput
		max      int64
		wantSize int
		wantErr  string // substring; empty means success
	}{
		{name: "ok", inputs: []tensor.Tensor{fp32s("A", 3, 2)}, wantSize: 3},
		{name: "unknown input", inputs: []tensor.Tensor{fp32s("A", 1, 2), fp32s("Z", 1, 2)}, wantErr: `no input named "Z"`},
		{name: "missing required", inputs: []tensor.Tensor{{Name: "B", Datatype: tensor.Int32, Shape: []int64{1, 1}, Data: make([]byte, 4)}}, wantErr: `missing input "A"`},
		{name: "wrong datatype", inputs: []tensor.Tensor{{Name: "A", Datatype: tensor.FP64, Shape: []int64{1, 2}, Data: make([]byte, 16)}}, wantErr: `input "A" has datatype FP64, expected FP32`},
		{name: "wrong dims", inputs: []tensor.Tensor{fp32s("A", 1, 3)}, wantErr: `input "A" has shape [1 3], expected [-1 2]`},
		{name: "no batch dim", inputs: []tensor.Tensor{fp32s("A", 2)}, wantErr: `has shape [2]`},
		{name: "batch too big", inputs: []tensor.Tensor{fp32s("A", 5, 2)}, wantErr: "batch size 5, must be 1 to 4"},
		{name: "batch mismatch", inputs: []tensor.Tensor{fp32s("A", 2, 2), {Name: "B", Datatype: tensor.Int32, Shape: []int64{3, 1}, Data: make([]byte, 12)}}, wantErr: "other inputs have 2"},
		{name: "data short", inputs: []tensor.Tensor{{Name: "A", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: make([]byte, 4)}}, wantErr: "needs 8 bytes"},
		{name: "duplicate", inputs: []tensor.Tensor{fp32s("A", 1, 2), fp32s("A", 1, 2)}, wantErr: "appears twice"},
		{name: "unknown output", inputs: []tensor.Tensor{fp32s("A", 1, 2)}, outputs: []inference.RequestedOutput{{Name: "Q"}}, wantErr: `no output named "Q"`},
		{name: "element limit", inputs: []tensor.Tensor{fp32s("A", 4, 2)}, max: 4, wantErr: "more than the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &inference.Request{Model: "m", Inputs: c.inputs, Outputs: c.outputs}
			size, err := checkRequest(cfg, req, c.max)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if size != c.wantSize {
					t.Errorf("size %d, want %d", size, c.wantSize)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
			if apierr.CodeOf(err) != apierr.InvalidArgument {
				t.Errorf("code %v, want invalid argument", apierr.CodeOf(err))
			}
			if !strings.Contains(err.Error(), "model m") {
				t.Errorf("error %q does not name the model", err)
			}
		})
	}
}

func TestCheckRequestAppliesReshape(t *testing.T) {
	cfg, err := modelconfig.ParseConfig([]byte(batchedConfig), "m/config.pbtxt")
	if err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{Inputs: []tensor.Tensor{fp32s("A", 2, 2), fp32s("R", 2, 4)}}
	if _, err := checkRequest(cfg, req, 0); err != nil {
		t.Fatal(err)
	}
	if got := req.Inputs[1].Shape; len(got) != 3 || got[0] != 2 || got[1] != 2 || got[2] != 2 {
		t.Errorf("reshaped shape %v, want [2 2 2]", got)
	}
}

func TestSelectOutputsKeepsRequestedInOrder(t *testing.T) {
	v := &version{}
	v.key.Model, v.key.Version = "m", "1"
	resp := &inference.Response{Outputs: []tensor.Tensor{{Name: "X"}, {Name: "Y"}}}
	got, err := selectOutputs(v, &inference.Request{ID: "7", Outputs: []inference.RequestedOutput{{Name: "Y"}}}, resp)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Outputs) != 1 || got.Outputs[0].Name != "Y" || got.ID != "7" || got.Version != "1" {
		t.Errorf("got %+v", got)
	}
	if _, err := selectOutputs(v, &inference.Request{Outputs: []inference.RequestedOutput{{Name: "Z"}}}, resp); apierr.CodeOf(err) != apierr.Internal {
		t.Errorf("missing output: %v, want internal", err)
	}
}

func TestCheckOutputs(t *testing.T) {
	cfg, err := modelconfig.ParseConfig([]byte(`
name: "m"
backend: "python"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "R" data_type: TYPE_INT32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } }
]`), "m/config.pbtxt")
	if err != nil {
		t.Fatal(err)
	}
	y := func(shape ...int64) tensor.Tensor {
		return tensor.Tensor{Name: "Y", Datatype: tensor.FP32, Shape: shape}
	}
	cases := []struct {
		name    string
		outputs []tensor.Tensor
		wantErr string
	}{
		{"ok", []tensor.Tensor{y(3, 2)}, ""},
		{"undeclared", []tensor.Tensor{{Name: "Z", Datatype: tensor.FP32, Shape: []int64{3, 2}}}, `output "Z", which its config.pbtxt does not declare`},
		{"twice", []tensor.Tensor{y(3, 2), y(3, 2)}, `output "Y" twice`},
		{"batch", []tensor.Tensor{y(2, 2)}, "expected batch size 3 first"},
		{"dims", []tensor.Tensor{y(3, 5)}, "declares [-1 2]"},
	}
	for _, c := range cases {
		diffs, err := checkOutputs(cfg, &inference.Response{Outputs: c.outputs}, 3)
		if len(diffs) > 0 {
			t.Errorf("%s: datatype differences %v, want none", c.name, diffs)
		}
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) || apierr.CodeOf(err) != apierr.Internal {
			t.Errorf("%s: error %v, want internal containing %q", c.name, err, c.wantErr)
		}
	}
	resp := &inference.Response{Outputs: []tensor.Tensor{{Name: "R", Datatype: tensor.Int32, Shape: []int64{3, 2, 2}}}}
	if diffs, err := checkOutputs(cfg, resp, 3); err != nil || len(diffs) > 0 {
		t.Fatal(diffs, err)
	}
	if got := resp.Outputs[0].Shape; len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Errorf("reshaped output shape %v, want [3 4]", got)
	}

	// Another datatype than declared passes through, as in Triton, and is
	// reported; the other checks still hold for that output.
	resp = &inference.Response{Outputs: []tensor.Tensor{
		{Name: "Y", Datatype: tensor.Int64, Shape: []int64{3, 2}},
		{Name: "R", Datatype: tensor.FP32, Shape: []int64{3, 2, 2}},
	}}
	diffs, err := checkOutputs(cfg, resp, 3)
	want := []datatypeDiff{{output: "Y", returned: tensor.Int64, declared: tensor.FP32}, {output: "R", returned: tensor.FP32, declared: tensor.Int32}}
	if err != nil || !slices.Equal(diffs, want) {
		t.Errorf("got %v, %v; want %v and no error", diffs, err, want)
	}
	if resp.Outputs[0].Datatype != tensor.Int64 || resp.Outputs[1].Shape[1] != 4 {
		t.Errorf("outputs changed: %+v", resp.Outputs)
	}
	_, err = checkOutputs(cfg, &inference.Response{Outputs: []tensor.Tensor{{Name: "Y", Datatype: tensor.Int64, Shape: []int64{3, 5}}}}, 3)
	if err == nil || !strings.Contains(err.Error(), "declares [-1 2]") {
		t.Errorf("shape of a passed-through datatype: %v, want the shape error", err)
	}
}

func TestDatatypeWarningsLogOncePerModelOutputAndDatatype(t *testing.T) {
	var buf bytes.Buffer
	w := newDatatypeWarnings(slog.New(slog.NewTextHandler(&buf, nil)))
	d := datatypeDiff{output: "SUM", returned: tensor.Int64, declared: tensor.Int32}
	for range 3 {
		w.warn("m", "1", d)
	}
	w.warn("other", "1", d)
	w.warn("m", "1", datatypeDiff{output: "SUM", returned: tensor.Int16, declared: tensor.Int32})
	w.warn("m", "2", d)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3 (m/SUM/INT64, other/SUM/INT64, m/SUM/INT16):\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"level=WARN", "model=m", "version=1", "output=SUM", "datatype=INT64", "declared=INT32"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("first warning %q lacks %q", lines[0], want)
		}
	}
}
