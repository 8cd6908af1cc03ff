package ipc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
)

// fakeCalls records the calls a stub makes; the test answers them.
type fakeCalls struct {
	infers   chan *ipc.Call
	controls chan *ipc.ControlCall
}

func newFakeCalls() *fakeCalls {
	return &fakeCalls{infers: make(chan *ipc.Call, 8), controls: make(chan *ipc.ControlCall, 8)}
}

func (f *fakeCalls) Infer(c *ipc.Call)          { f.infers <- c }
func (f *fakeCalls) Control(c *ipc.ControlCall) { f.controls <- c }

func (f *fakeCalls) nextInfer(t *testing.T) *ipc.Call {
	t.Helper()
	select {
	case c := <-f.infers:
		return c
	case <-time.After(testTimeout):
		t.Fatal("no BLS call arrived")
		return nil
	}
}

type batchKey struct{}

// startCaller starts a testdata model with the fake handler installed.
func startCaller(t *testing.T, model string) (*stub, *fakeCalls) {
	t.Helper()
	s := startStub(t, model, stubOptions{})
	f := newFakeCalls()
	s.SetHandler(f)
	if _, err := s.Init(ctxT(t), s.initArgs(model)); err != nil {
		t.Fatalf("init %s: %v", model, err)
	}
	return s, f
}

// executeAsync runs one request on s in the background.
func executeAsync(ctx context.Context, s *stub, req *inference.Request) chan []ipc.Result {
	done := make(chan []ipc.Result, 1)
	go func() {
		res, err := s.Execute(ctx, []*inference.Request{req})
		if err != nil {
			res = []ipc.Result{{Err: err}}
		}
		done <- res
	}()
	return done
}

func waitResult(t *testing.T, done chan []ipc.Result) ipc.Result {
	t.Helper()
	select {
	case res := <-done:
		return res[0]
	case <-time.After(testTimeout):
		t.Fatal("execute did not return")
		return ipc.Result{}
	}
}

func scaled(t *testing.T, in tensor.Tensor, name string, k float32) tensor.Tensor {
	vals := floats(t, in)
	for i := range vals {
		vals[i] *= k
	}
	out := fp32(name, vals...)
	out.Shape = in.Shape
	return out
}

func TestBLSCallCarriesTheRequest(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	ctx := context.WithValue(ctxT(t), batchKey{}, "batch-1")
	req := &inference.Request{Model: "caller", Version: "1", ID: "r1", Inputs: []tensor.Tensor{fp32("INPUT0", 1, 2, 3)}}
	done := executeAsync(ctx, s, req)

	call := f.nextInfer(t)
	r := call.Request
	if r.Model != "target" || r.Version != "2" || r.ID != "child-r1" {
		t.Errorf("call names model %q version %q id %q, want target 2 child-r1", r.Model, r.Version, r.ID)
	}
	if want := []inference.RequestedOutput{{Name: "OUT"}}; !reflect.DeepEqual(r.Outputs, want) {
		t.Errorf("requested outputs = %v, want %v (deduplicated)", r.Outputs, want)
	}
	wantParams := map[string]any{"k": "v", "n": int64(3)}
	if !reflect.DeepEqual(r.Parameters, wantParams) {
		t.Errorf("parameters = %#v, want %#v", r.Parameters, wantParams)
	}
	if want := (inference.Sequence{ID: inference.NumericID(7), Start: true}); r.Sequence != want {
		t.Errorf("sequence = %+v, want %+v", r.Sequence, want)
	}
	if call.Timeout != 1500*time.Microsecond || call.Decoupled {
		t.Errorf("timeout %v decoupled %v, want 1.5ms false", call.Timeout, call.Decoupled)
	}
	if call.Parent == nil || call.Parent.Value(batchKey{}) != "batch-1" {
		t.Errorf("call's parent context does not carry the execute's values")
	}
	if got := floats(t, r.Inputs[0]); !reflect.DeepEqual(got, []float32{1, 2, 3}) || r.Inputs[0].Name != "INPUT0" {
		t.Errorf("input %s = %v, want INPUT0 [1 2 3]", r.Inputs[0].Name, got)
	}
	if !call.Respond(&inference.Response{Outputs: []tensor.Tensor{scaled(t, r.Inputs[0], "OUT", 2)}}, nil, true) {
		t.Fatal("Respond reported the response was not sent")
	}
	res := waitResult(t, done)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := floats(t, output(t, res.Response, "OUT")); !reflect.DeepEqual(got, []float32{2, 4, 6}) {
		t.Errorf("OUT = %v, want [2 4 6]", got)
	}
	select {
	case <-call.Context().Done():
	default:
		t.Error("the call's context is still live after its final response")
	}
	if call.Respond(nil, errors.New("late"), true) {
		t.Error("a response after the final one was sent")
	}
}

func TestBLSCallError(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	req := &inference.Request{Model: "caller", Version: "1", ID: "r", Inputs: []tensor.Tensor{fp32("INPUT0", 1)},
		Parameters: map[string]any{"target": "missing"}}
	done := executeAsync(ctxT(t), s, req)
	call := f.nextInfer(t)
	call.Respond(nil, apierr.New(apierr.NotFound, "unknown model %q", "missing"), true)
	res := waitResult(t, done)
	var me *ipc.ModelError
	if !errors.As(res.Err, &me) || me.Code != "NOT_FOUND" || me.Message != `unknown model "missing"` {
		t.Fatalf("result error = %v (%#v), want the callee's NOT_FOUND error", res.Err, me)
	}
}

func TestBLSAsyncCallsAreConcurrent(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller_async")
	req := &inference.Request{Model: "caller_async", Version: "1", ID: "r", Inputs: []tensor.Tensor{fp32("INPUT0", 1, 2)}}
	done := executeAsync(ctxT(t), s, req)
	// Both calls are in flight before either is answered.
	first, second := f.nextInfer(t), f.nextInfer(t)
	for _, c := range []*ipc.Call{second, first} {
		k := float32(10)
		if c.Request.ID == "1" {
			k = 100
		}
		c.Respond(&inference.Response{Outputs: []tensor.Tensor{scaled(t, c.Request.Inputs[0], "OUT", k)}}, nil, true)
	}
	res := waitResult(t, done)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if a, b := floats(t, output(t, res.Response, "OUT0")), floats(t, output(t, res.Response, "OUT1")); !reflect.DeepEqual(a, []float32{10, 20}) || !reflect.DeepEqual(b, []float32{100, 200}) {
		t.Errorf("OUT0, OUT1 = %v, %v; want [10 20], [100 200]", a, b)
	}
}

func TestBLSLargeTensor(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	n := 1 << 20 // 4 MiB: sent from the array's memory, not joined
	data := make([]byte, 4*n)
	for i := range n {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(i)))
	}
	in := tensor.Tensor{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{int64(n)}, Data: data}
	done := executeAsync(ctxT(t), s, &inference.Request{Model: "caller", Version: "1", ID: "big", Inputs: []tensor.Tensor{in}})
	call := f.nextInfer(t)
	got := call.Request.Inputs[0]
	if !reflect.DeepEqual(got.Data, data) {
		t.Fatal("the large input arrived changed")
	}
	out := got
	out.Name = "OUT"
	call.Respond(&inference.Response{Outputs: []tensor.Tensor{out}}, nil, true)
	res := waitResult(t, done)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if o := output(t, res.Response, "OUT"); !reflect.DeepEqual(o.Data, data) {
		t.Fatal("the large output came back changed")
	}
}

func TestBLSCallEndsWithTheConnection(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	executeAsync(ctxT(t), s, &inference.Request{Model: "caller", Version: "1", ID: "r", Inputs: []tensor.Tensor{fp32("INPUT0", 1)}})
	call := f.nextInfer(t)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-call.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the call's context did not end when the stub died")
	}
	if call.Respond(nil, errors.New("too late"), true) {
		t.Error("a response to a dead stub was reported sent")
	}
}

func TestModelControlCall(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	for _, tc := range []struct {
		ready   bool
		err     error
		wantErr string
	}{
		{ready: true},
		{err: apierr.New(apierr.NotFound, "Request for unknown model: 'm' is not found"),
			wantErr: "Failed to check model readiness: Request for unknown model: 'm' is not found"},
	} {
		done := executeAsync(ctxT(t), s, &inference.Request{Model: "caller", Version: "1", ID: "r",
			Inputs: []tensor.Tensor{fp32("INPUT0", 1)}, Parameters: map[string]any{"control": "m"}})
		cc := waitControl(t, f)
		if cc.Op != "ready" || cc.Name != "m" || cc.Version != "" {
			t.Errorf("control request = %q %q %q, want ready m \"\"", cc.Op, cc.Name, cc.Version)
		}
		cc.Respond(tc.ready, tc.err)
		wantTrueOrError(t, waitResult(t, done), "READY", tc.wantErr)
	}
}

// load_model's config= and files= reach the handler as they were given:
// the config string, and the files' bytes under their "file:" keys.
func TestModelControlLoadCarriesConfigAndFiles(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	const config = `{"backend":"python","max_batch_size":0}`
	files := `{"file:1/model.py": "class TritonPythonModel:\n    pass\n", "file:1/data.txt": "\u00e9"}`
	for _, tc := range []struct {
		err     error
		wantErr string
	}{
		{},
		{err: apierr.New(apierr.InvalidArgument, "cannot load model m: unknown load parameter"),
			wantErr: "Failed to load model: cannot load model m: unknown load parameter"},
	} {
		done := executeAsync(ctxT(t), s, &inference.Request{Model: "caller", Version: "1", ID: "r",
			Inputs: []tensor.Tensor{fp32("INPUT0", 1)}, Parameters: map[string]any{"load": "m", "config": config, "files": files}})
		cc := waitControl(t, f)
		if cc.Op != "load" || cc.Name != "m" || cc.Config != config {
			t.Errorf("control request = %q %q config %q, want load m %q", cc.Op, cc.Name, cc.Config, config)
		}
		want := map[string]string{"file:1/model.py": "class TritonPythonModel:\n    pass\n", "file:1/data.txt": "\u00e9"}
		if len(cc.Files) != len(want) {
			t.Errorf("files = %q, want %q", cc.Files, want)
		}
		for k, v := range want {
			if string(cc.Files[k]) != v {
				t.Errorf("file %s = %q, want %q", k, cc.Files[k], v)
			}
		}
		cc.Respond(false, tc.err)
		wantTrueOrError(t, waitResult(t, done), "LOADED", tc.wantErr)
	}
}

// waitControl waits for the next model control request the handler gets.
func waitControl(t *testing.T, f *fakeCalls) *ipc.ControlCall {
	t.Helper()
	select {
	case cc := <-f.controls:
		return cc
	case <-time.After(testTimeout):
		t.Fatal("no model control request arrived")
		return nil
	}
}

// wantTrueOrError checks a model control call's result: the error naming
// wantErr, or with no wantErr the BOOL output name holding [true].
func wantTrueOrError(t *testing.T, res ipc.Result, name, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if res.Err == nil || !strings.Contains(res.Err.Error(), wantErr) {
			t.Errorf("result error = %v, want %q", res.Err, wantErr)
		}
		return
	}
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if o := output(t, res.Response, name); o.Datatype != tensor.Bool || len(o.Data) != 1 || o.Data[0] != 1 {
		t.Errorf("%s = %+v, want [true]", name, o)
	}
}

func TestTritonCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{apierr.New(apierr.NotFound, "x"), "NOT_FOUND"},
		{apierr.New(apierr.InvalidArgument, "x"), "INVALID_ARG"},
		{apierr.Unavailablef("x"), "UNAVAILABLE"},
		{apierr.New(apierr.DeadlineExceeded, "x"), "UNAVAILABLE"},
		{apierr.New(apierr.Unsupported, "x"), "UNSUPPORTED"},
		{context.Canceled, "CANCELLED"},
		{apierr.Wrap(apierr.Internal, &ipc.ModelError{Message: "m", Code: "ALREADY_EXISTS"}, "model x"), "ALREADY_EXISTS"},
		{errors.New("x"), "INTERNAL"},
	}
	for _, tc := range tests {
		if got := ipc.TritonCode(tc.err); got != tc.want {
			t.Errorf("TritonCode(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
