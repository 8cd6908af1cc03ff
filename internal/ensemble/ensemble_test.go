package ensemble

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/tensor"
)

func config(t *testing.T, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

const io4 = `input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] `

// diamond: X → a → A; X → b → B; (A, B) → c → Y.
const diamond = `name: "d" platform: "ensemble" ` + io4 + `ensemble_scheduling { step [
  { model_name: "a" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "A" } },
  { model_name: "b" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "B" } },
  { model_name: "c" input_map [ { key: "L" value: "A" }, { key: "R" value: "B" } ] output_map { key: "OUT" value: "Y" } } ] }`

// fakeCaller answers every step with OUT = the first input, after waiting
// for release when the model is in gate.
type fakeCaller struct {
	mu      sync.Mutex
	calls   []*inference.Request
	started chan string
	gate    map[string]chan struct{}
	fail    map[string]error
}

func (f *fakeCaller) Call(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.mu.Unlock()
	if f.started != nil {
		f.started <- req.Model
	}
	if g := f.gate[req.Model]; g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := f.fail[req.Model]; err != nil {
		return nil, err
	}
	out := req.Inputs[0]
	out.Name = "OUT"
	return &inference.Response{Outputs: []tensor.Tensor{out}}, nil
}

func x() tensor.Tensor {
	return tensor.Tensor{Name: "X", Datatype: tensor.FP32, Shape: []int64{4}, Data: make([]byte, 16)}
}

func TestIndependentStepsRunAtOnce(t *testing.T) {
	p, err := FromConfig(config(t, diamond))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCaller{started: make(chan string, 3), gate: map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}}
	done := make(chan error, 1)
	var resp *inference.Response
	go func() {
		var err error
		resp, err = p.Run(context.Background(), f, &inference.Request{ID: "r", Inputs: []tensor.Tensor{x()}, Callers: []string{"outer"}})
		done <- err
	}()
	// a and b both start before either is let go.
	got := map[string]bool{}
	for range 2 {
		select {
		case m := <-f.started:
			got[m] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("started %v; a and b should run at once", got)
		}
	}
	if !got["a"] || !got["b"] {
		t.Fatalf("started %v, want a and b", got)
	}
	close(f.gate["a"])
	close(f.gate["b"])
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(resp.Outputs) != 1 || resp.Outputs[0].Name != "Y" {
		t.Fatalf("outputs %+v, want Y", resp.Outputs)
	}
	for _, c := range f.calls {
		if c.ID != "r" || strings.Join(c.Callers, ",") != "outer,d" {
			t.Errorf("step request %s: id %q callers %v, want r and [outer d]", c.Model, c.ID, c.Callers)
		}
		if c.Model == "c" && (len(c.Inputs) != 2 || c.Inputs[0].Name != "L" || c.Inputs[1].Name != "R") {
			t.Errorf("step c inputs %+v, want L and R renamed from A and B", c.Inputs)
		}
	}
}

func TestFailingStepCancelsTheOthersAndNamesItself(t *testing.T) {
	p, err := FromConfig(config(t, diamond))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCaller{gate: map[string]chan struct{}{"a": make(chan struct{})},
		fail: map[string]error{"b": apierr.Unavailablef("model b is not ready: b_0 is RESTARTING")}}
	_, err = p.Run(context.Background(), f, &inference.Request{Inputs: []tensor.Tensor{x()}})
	var se *StepError
	if !errors.As(err, &se) || se.Index != 1 || se.Model != "b" {
		t.Fatalf("err = %v, want step 1 (model b)", err)
	}
	if apierr.CodeOf(err) != apierr.Unavailable || !strings.Contains(err.Error(), "ensemble d: step 1 (model b): model b is not ready") {
		t.Fatalf("err = %v (%v), want the step's Unavailable naming it", err, apierr.CodeOf(err))
	}
	for _, c := range f.calls {
		if c.Model == "c" {
			t.Error("step c ran after b failed")
		}
	}
}

func TestFromConfigErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"no scheduling", `name: "e" platform: "ensemble" ` + io4, "ensemble scheduling must be set for ensemble e whose platform is ensemble"},
		{"no steps", `name: "e" ` + io4 + `ensemble_scheduling { }`, "must specify 'step' for ensemble 'e'"},
		{"no model", `name: "e" ` + io4 + `ensemble_scheduling { step [ { input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } } ] }`,
			"must specify 'model_name' in step 0 of ensemble 'e'"},
		{"unused input", `name: "e" input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "Z" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] ` +
			`ensemble_scheduling { step [ { model_name: "a" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } } ] }`,
			"ensemble input 'Z' for ensemble e' is not used"},
		{"unwritten output", `name: "e" ` + io4 + `ensemble_scheduling { step [ { model_name: "a" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "T" } } ] }`,
			"output 'Y' for ensemble 'e' is not written"},
		{"written twice", `name: "e" ` + io4 + `ensemble_scheduling { step [
			{ model_name: "a" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } },
			{ model_name: "b" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } } ] }`,
			"ensemble tensor 'Y' can appear in an output map only once for ensemble 'e' step 1"},
		{"cycle", `name: "e" ` + io4 + `ensemble_scheduling { step [
			{ model_name: "a" input_map [ { key: "IN" value: "X" }, { key: "R" value: "B" } ] output_map { key: "OUT" value: "A" } },
			{ model_name: "b" input_map { key: "IN" value: "A" } output_map { key: "OUT" value: "B" } },
			{ model_name: "c" input_map { key: "IN" value: "B" } output_map { key: "OUT" value: "Y" } } ] }`,
			"step 0 (model a): input 'R' waits for ensemble tensor 'B', which is written only after this step"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromConfig(config(t, tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckAgainstStepConfigs(t *testing.T) {
	step := func(text string) func(Step) (*inferencepb.ModelConfig, error) {
		return func(Step) (*inferencepb.ModelConfig, error) { return config(t, text), nil }
	}
	single := `name: "e" platform: "ensemble" max_batch_size: 8 ` + io4 +
		`ensemble_scheduling { step [ { model_name: "a" input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } } ] }`
	p, err := FromConfig(config(t, single))
	if err != nil {
		t.Fatal(err)
	}
	ens := config(t, single)
	tests := []struct {
		name, step, want string
	}{
		{"ok", `max_batch_size: 8 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`, ""},
		{"non-batching step with a batch dim", `input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1, 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]`, ""},
		{"batch size", `max_batch_size: 4 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"ensemble e allows maximum batch size 8, but it contains model a which only allows maximum batch size to be 4"},
		{"no such input", `max_batch_size: 8 input [ { name: "OTHER" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"in ensemble e, ensemble tensor X is mapping to non-existing input IN in model a"},
		{"unmapped input", `max_batch_size: 8 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "MORE" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"in ensemble e, input MORE in model a is not mapped to any ensemble tensors"},
		{"no such output", `max_batch_size: 8 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "RES" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"in ensemble e, ensemble tensor Y is mapped from non-existing output OUT in model a"},
		{"dtype", `max_batch_size: 8 input [ { name: "IN" data_type: TYPE_INT32 dims: [ 4 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"in ensemble e, ensemble tensor X: inconsistent data type: TYPE_FP32 is inferred from model e while TYPE_INT32 is inferred from model a"},
		{"shape", `max_batch_size: 8 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 5 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"in ensemble e, ensemble tensor X: inconsistent shape: [-1,4] is inferred from model e while [-1,5] is inferred from model a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Check(ens, step(tc.step))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
