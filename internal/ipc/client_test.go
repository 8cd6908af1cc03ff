package ipc_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
)

func addSubRequest(id string) *inference.Request {
	a := make([]float32, 16)
	b := make([]float32, 16)
	for i := range a {
		a[i] = float32(i)
		b[i] = float32(2 * i)
	}
	return &inference.Request{
		Model:   "addsub",
		Version: "1",
		ID:      id,
		Inputs:  []tensor.Tensor{fp32("INPUT0", a...), fp32("INPUT1", b...)},
	}
}

func TestInitOK(t *testing.T) {
	t.Parallel()
	_, res := startModel(t, "addsub")
	if res.HasHealthHook || res.HookName != "" {
		t.Errorf("init result = %+v, want no hook", res)
	}
}

func TestInitRaises(t *testing.T) {
	t.Parallel()
	tests := []struct {
		model    string
		wantErr  string
		wantOp   string
		wantType string
	}{
		{"init_raises", "initialize raised ValueError: bad config value for init_raises", "initialize", "ValueError"},
		{"import_error", "import model.py raised ModuleNotFoundError: No module named 'vigil_no_such_module'", "import model.py", "ModuleNotFoundError"},
		{"no_class", "defines no class TritonPythonModel", "import model.py", ""},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			t.Parallel()
			s := startStub(t, tc.model, stubOptions{})
			_, err := s.Init(ctxT(t), s.initArgs(tc.model))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("init error = %v, want it to contain %q", err, tc.wantErr)
			}
			me := isModelError(err)
			if me == nil {
				t.Fatalf("init error %v is not a *ModelError", err)
			}
			if me.Op != tc.wantOp || me.Type != tc.wantType {
				t.Errorf("op, type = %q, %q; want %q, %q", me.Op, me.Type, tc.wantOp, tc.wantType)
			}
			if tc.wantType != "" && !strings.Contains(me.Traceback, "Traceback") {
				t.Errorf("traceback = %q, want a Python traceback", me.Traceback)
			}
			// The stub stays up after a failed init.
			if err := s.Ping(ctxT(t)); err != nil {
				t.Errorf("ping after failed init: %v", err)
			}
		})
	}
}

func TestInitWithoutNumpy(t *testing.T) {
	t.Parallel()
	fake := t.TempDir()
	if err := os.MkdirAll(filepath.Join(fake, "numpy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fake, "numpy", "__init__.py"), []byte("raise ImportError(\"No module named 'numpy'\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startStub(t, "addsub", stubOptions{extraPythonPath: fake})
	_, err := s.Init(ctxT(t), s.initArgs("addsub"))
	me := isModelError(err)
	if me == nil || me.Op != "import numpy" || !strings.Contains(me.Message, "-m pip install numpy") {
		t.Fatalf("init error = %v (%#v), want an import numpy error that says how to install it", err, me)
	}
}

func TestExecuteAddSub(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "addsub")
	reqs := []*inference.Request{addSubRequest("a"), addSubRequest("b")}
	reqs[1].Outputs = []inference.RequestedOutput{{Name: "OUTPUT1"}}
	results, err := s.Execute(ctxT(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("got %d results, want 2", len(results))
	}
	for i, r := range results {
		if r.Err != nil {
			t.Fatalf("result %d: %v", i, r.Err)
		}
		if r.Response.Model != "addsub" || r.Response.Version != "1" || r.Response.ID != reqs[i].ID {
			t.Errorf("response %d identity = %q %q %q", i, r.Response.Model, r.Response.Version, r.Response.ID)
		}
	}
	sum := floats(t, output(t, results[0].Response, "OUTPUT0"))
	diff := floats(t, output(t, results[0].Response, "OUTPUT1"))
	for i := range 16 {
		if sum[i] != float32(3*i) || diff[i] != float32(-i) {
			t.Fatalf("element %d: sum %v diff %v, want %v %v", i, sum[i], diff[i], 3*i, -i)
		}
	}
	if o := output(t, results[0].Response, "OUTPUT0"); !reflect.DeepEqual(o.Shape, []int64{16}) {
		t.Errorf("OUTPUT0 shape = %v, want [16]", o.Shape)
	}
	if got := len(results[1].Response.Outputs); got != 1 || results[1].Response.Outputs[0].Name != "OUTPUT1" {
		t.Errorf("request that asked for OUTPUT1 got %d outputs: %+v", got, results[1].Response.Outputs)
	}
}

func TestExecuteAsync(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "async_addsub")
	results, err := s.Execute(ctxT(t), []*inference.Request{addSubRequest("x")})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err != nil {
		t.Fatal(results[0].Err)
	}
	if got := floats(t, output(t, results[0].Response, "OUTPUT0")); got[5] != 15 {
		t.Errorf("OUTPUT0[5] = %v, want 15", got[5])
	}
	if err := s.Finalize(ctxT(t)); err != nil {
		t.Errorf("async finalize: %v", err)
	}
}

func TestExecuteRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "echo")
	fp16 := tensor.Tensor{Name: "H", Datatype: tensor.FP16, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x00, 0xc0}} // 1, -2
	boolT := tensor.Tensor{Name: "B", Datatype: tensor.Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}}
	empty := tensor.Tensor{Name: "E", Datatype: tensor.FP32, Shape: []int64{0, 4}, Data: nil}
	i64 := tensor.Tensor{Name: "L", Datatype: tensor.Int64, Shape: []int64{1, 2}, Data: []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	req := &inference.Request{
		Model:      "echo",
		Version:    "1",
		ID:         "req-42",
		Parameters: map[string]any{"temperature": 0.5, "tag": "x"},
		Inputs: []tensor.Tensor{
			bytesTensor("S", []int64{2, 2}, "", "hello", "\x00bin\xffary", "€"),
			fp16, boolT, empty, i64,
		},
	}
	results, err := s.Execute(ctxT(t), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	resp := r.Response

	s2 := output(t, resp, "S_OUT")
	if !reflect.DeepEqual(s2.Shape, []int64{2, 2}) || !reflect.DeepEqual(elements(t, s2), []string{"", "hello", "\x00bin\xffary", "€"}) {
		t.Errorf("S_OUT = %v %q", s2.Shape, elements(t, s2))
	}
	for _, in := range req.Inputs[1:] {
		got := output(t, resp, in.Name+"_OUT")
		if got.Datatype != in.Datatype || !reflect.DeepEqual(got.Shape, in.Shape) || string(got.Data) != string(in.Data) {
			t.Errorf("%s_OUT = %s %v %x, want %s %v %x", in.Name, got.Datatype, got.Shape, got.Data, in.Datatype, in.Shape, in.Data)
		}
	}

	var args map[string]string
	if err := json.Unmarshal([]byte(elements(t, output(t, resp, "ARGS"))[0]), &args); err != nil {
		t.Fatal(err)
	}
	want := s.initArgs("echo")
	for k, v := range map[string]string{
		"model_name":               "echo",
		"model_version":            "1",
		"model_repository":         want.ModelRepository,
		"model_instance_kind":      "CPU",
		"model_instance_name":      "echo_0",
		"model_instance_device_id": "0",
		"model_config":             want.ModelConfigJSON,
	} {
		if args[k] != v {
			t.Errorf("args[%q] = %q, want %q", k, args[k], v)
		}
	}
	var params map[string]any
	if err := json.Unmarshal([]byte(elements(t, output(t, resp, "PARAMS"))[0]), &params); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(params, req.Parameters) {
		t.Errorf("parameters() = %v, want %v", params, req.Parameters)
	}
	if got := elements(t, output(t, resp, "REQUEST_ID")); got[0] != "req-42" {
		t.Errorf("request_id() = %q", got[0])
	}
	// Triton type codes: BYTES(STRING) 13, FP16 10, BOOL 1, FP32 11, INT64 9.
	codes := output(t, resp, "CODES")
	if codes.Datatype != tensor.Int32 || string(codes.Data) != string([]byte{13, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 11, 0, 0, 0, 9, 0, 0, 0}) {
		t.Errorf("triton_dtype() codes = %s %v", codes.Datatype, codes.Data)
	}
	if got := elements(t, output(t, resp, "UNICODE")); !reflect.DeepEqual(got, []string{"héllo", "wörld"}) {
		t.Errorf("str array = %q", got)
	}
	if be := output(t, resp, "BIG_ENDIAN"); be.Datatype != tensor.Int32 || string(be.Data) != string([]byte{0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}) {
		t.Errorf("big-endian array sent as %s %v", be.Datatype, be.Data)
	}
	st := output(t, resp, "STRIDED")
	if !reflect.DeepEqual(st.Shape, []int64{3, 2}) || st.Data[8] != 3 || st.Data[16] != 1 {
		t.Errorf("transposed array sent as %v %v", st.Shape, st.Data)
	}
	if got := elements(t, output(t, resp, "CONFIG_DTYPE")); got[0] != "TYPE_FP32" {
		t.Errorf("get_output_config_by_name data_type = %q", got[0])
	}
	if resp.Parameters["echoed"] != true {
		t.Errorf("response parameters = %v", resp.Parameters)
	}
}

func TestExecuteErrors(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "errors")
	req := func(mode string) *inference.Request {
		return &inference.Request{Model: "errors", ID: mode, Parameters: map[string]any{"mode": mode}}
	}

	t.Run("per request", func(t *testing.T) {
		results, err := s.Execute(ctxT(t), []*inference.Request{req("ok"), req("triton_error"), req("bad_dtype")})
		if err != nil {
			t.Fatal(err)
		}
		if results[0].Err != nil || results[0].Response == nil {
			t.Errorf("result 0 = %+v, want a response", results[0])
		}
		me := isModelError(results[1].Err)
		if me == nil || me.Error() != "input INPUT0 must be positive" || me.Code != "INVALID_ARG" {
			t.Errorf("result 1 error = %#v, want TritonError INVALID_ARG", results[1].Err)
		}
		if me.APICode().String() != "invalid argument" {
			t.Errorf("APICode = %v", me.APICode())
		}
		if me := isModelError(results[2].Err); me == nil || !strings.Contains(me.Message, "complex64") {
			t.Errorf("result 2 error = %v, want an unsupported dtype error", results[2].Err)
		}
	})

	batch := []struct {
		mode, want, wantType string
	}{
		{"raise", "execute raised RuntimeError: CUDA error: out of memory", "RuntimeError"},
		{"none", "execute returned NoneType, want a list of 2 InferenceResponse", ""},
		{"short", "execute returned 1 responses for 2 requests", ""},
		{"wrong_type", "execute returned str at index 0, want InferenceResponse", ""},
		{"exit", "execute raised SystemExit: 3", "SystemExit"},
	}
	for _, tc := range batch {
		t.Run(tc.mode, func(t *testing.T) {
			results, err := s.Execute(ctxT(t), []*inference.Request{req(tc.mode), req("ok")})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("execute = %v, %v; want error %q", results, err, tc.want)
			}
			me := isModelError(err)
			if me == nil || me.Type != tc.wantType || me.Op != "execute" || me.Code != "INTERNAL" {
				t.Errorf("model error = %#v", me)
			}
			if errors.Is(err, ipc.ErrClosed) {
				t.Error("a model error must not look like a lost connection")
			}
		})
	}

	// The stub is still serving after all of that.
	if results, err := s.Execute(ctxT(t), []*inference.Request{req("ok")}); err != nil || results[0].Err != nil {
		t.Fatalf("execute after errors: %v %v", err, results)
	}
}

func TestPingDuringSlowExecute(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "blocking")
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")

	type outcome struct {
		results []ipc.Result
		err     error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := s.Execute(ctxT(t), []*inference.Request{{ID: "slow", Parameters: map[string]any{"started": started, "release": release}}})
		done <- outcome{r, err}
	}()
	waitFile(t, started)

	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ping while execute runs: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	ok, detail, err := s.CheckHealth(ctx)
	cancel()
	if err != nil || !ok {
		t.Fatalf("health while execute runs = %v %q %v", ok, detail, err)
	}
	select {
	case o := <-done:
		t.Fatalf("execute returned before release: %+v", o)
	default:
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-done:
		if o.err != nil || o.results[0].Err != nil {
			t.Fatalf("execute = %+v", o)
		}
	case <-time.After(testTimeout):
		t.Fatal("execute did not finish after release")
	}
}

func TestExecuteContextTimeout(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "blocking")
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := s.Execute(ctx, []*inference.Request{{ID: "hung", Parameters: map[string]any{"started": started, "release": release}}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("execute = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("execute returned %s after its deadline", took)
	}
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping after abandoned execute: %v", err)
	}

	// Let the abandoned batch finish: its late reply must be dropped and
	// not confused with the next call's.
	waitFile(t, started)
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	results, err := s.Execute(ctxT(t), []*inference.Request{{ID: "next", Parameters: map[string]any{"release": release}}})
	if err != nil || results[0].Err != nil || results[0].Response.ID != "next" {
		t.Fatalf("execute after abandoned one = %+v, %v", results, err)
	}
}

func TestStubKilled(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "blocking")
	dir := t.TempDir()
	started := filepath.Join(dir, "started")

	errc := make(chan error, 1)
	go func() {
		_, err := s.Execute(ctxT(t), []*inference.Request{{ID: "inflight", Parameters: map[string]any{"started": started, "release": filepath.Join(dir, "never")}}})
		errc <- err
	}()
	waitFile(t, started)
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), "Done after SIGKILL")
	select {
	case err := <-errc:
		if !errors.Is(err, ipc.ErrClosed) {
			t.Fatalf("in-flight execute = %v, want ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("in-flight execute did not return after SIGKILL")
	}
	if err := s.Ping(ctxT(t)); !errors.Is(err, ipc.ErrClosed) {
		t.Errorf("ping after SIGKILL = %v, want ErrClosed", err)
	}
	if _, _, err := s.CheckHealth(ctxT(t)); !errors.Is(err, ipc.ErrClosed) {
		t.Errorf("health after SIGKILL = %v, want ErrClosed", err)
	}
}

func TestHealthHook(t *testing.T) {
	t.Parallel()
	s, res := startModel(t, "health")
	if !res.HasHealthHook || res.HookName != "is_healthy" {
		t.Fatalf("init result = %+v, want the is_healthy hook", res)
	}
	setHealth := func(mode string) {
		t.Helper()
		if _, err := s.Execute(ctxT(t), []*inference.Request{{Parameters: map[string]any{"health": mode}}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		mode   string
		ok     bool
		detail string
	}{
		{"true", true, ""},
		{"false", false, "is_healthy returned False"},
		{"raise", false, "is_healthy raised ValueError: database connection lost"},
		{"true", true, ""},
	}
	for _, tc := range tests {
		setHealth(tc.mode)
		ok, detail, err := s.CheckHealth(ctxT(t))
		if err != nil || ok != tc.ok || detail != tc.detail {
			t.Errorf("mode %s: health = %v %q %v, want %v %q", tc.mode, ok, detail, err, tc.ok, tc.detail)
		}
	}
}

func TestHealthSingleFlight(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "health")
	dir := t.TempDir()
	log, release := filepath.Join(dir, "hook.log"), filepath.Join(dir, "release")
	if _, err := s.Execute(ctxT(t), []*inference.Request{{Parameters: map[string]any{"health": "block", "started": log, "release": release}}}); err != nil {
		t.Fatal(err)
	}
	shortCheck := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, _, err := s.CheckHealth(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("health while the hook blocks = %v, want DeadlineExceeded", err)
		}
	}

	// The first check starts the hook, which blocks; the second arrives
	// while it runs and must join it rather than start another call. The
	// ping after it proves the stub's reader has handled its frame.
	shortCheck()
	waitFile(t, log)
	shortCheck()
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFileContains(t, log, "return 1")

	// A check after the call finished starts a new one.
	ok, detail, err := s.CheckHealth(ctxT(t))
	if err != nil || !ok {
		t.Fatalf("health after release = %v %q %v", ok, detail, err)
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(calls), "call"); got != 2 {
		t.Errorf("hook ran %d times for 3 checks, want 2 (single-flight):\n%s", got, calls)
	}
}

func TestHealthAsyncHook(t *testing.T) {
	t.Parallel()
	s, res := startModel(t, "health_async")
	if !res.HasHealthHook || res.HookName != "is_ready" {
		t.Fatalf("init result = %+v, want the is_ready hook", res)
	}
	ok, detail, err := s.CheckHealth(ctxT(t))
	if err != nil || ok || detail != "is_ready returned 0" {
		t.Errorf("health = %v %q %v, want false \"is_ready returned 0\"", ok, detail, err)
	}
}

func TestHealthBeforeInit(t *testing.T) {
	t.Parallel()
	s := startStub(t, "health", stubOptions{})
	ok, detail, err := s.CheckHealth(ctxT(t))
	if err != nil || ok || detail == "" {
		t.Errorf("health before init = %v %q %v, want not ok with a reason", ok, detail, err)
	}
}

func TestFinalize(t *testing.T) {
	t.Parallel()
	s := startStub(t, "finalize", stubOptions{})
	marker := filepath.Join(t.TempDir(), "finalized")
	args := s.initArgs("finalize")
	cfg, _ := json.Marshal(map[string]any{"name": "finalize", "parameters": map[string]any{"finalize_marker": map[string]string{"string_value": marker}}})
	args.ModelConfigJSON = string(cfg)
	if _, err := s.Init(ctxT(t), args); err != nil {
		t.Fatal(err)
	}
	if err := s.Finalize(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "finalized" {
		t.Errorf("finalize marker = %q, %v", b, err)
	}
	waitClosed(t, s.exited, "stub exit after finalize")
	waitClosed(t, s.Done(), "Done after finalize")
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("stub exit code = %d, want 0", code)
	}
}

func TestCloseStopsStub(t *testing.T) {
	t.Parallel()
	s, _ := startModel(t, "addsub")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	waitClosed(t, s.Done(), "Done after Close")
	waitClosed(t, s.exited, "stub exit after Close (end of stream)")
	if _, err := s.Execute(ctxT(t), []*inference.Request{addSubRequest("late")}); !errors.Is(err, ipc.ErrClosed) {
		t.Errorf("execute after close = %v, want ErrClosed", err)
	}
}
