package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/model"
)

// fakeModels is a recording fake of Models. Each method answers with its
// Func field when set, else with the canned values.
type fakeModels struct {
	mu       sync.Mutex
	requests []*inference.Request
	loads    []loadCall

	InferFunc func(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// StreamFunc answers InferStream; without it InferStream emits
	// Infer's answer as the one final reply.
	StreamFunc func(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error
	MetaFunc   func(name, version string) (*model.Metadata, error)
	ConfigFunc func(name, version string) ([]byte, error)
	StatsFunc  func(name, version string) ([]model.Stats, error)
	IndexFunc  func(readyOnly bool) []model.IndexEntry
	LoadErr    error
}

type loadCall struct {
	verb   string
	name   string
	params map[string]any
}

var _ Models = (*fakeModels)(nil)

func (f *fakeModels) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if f.InferFunc != nil {
		return f.InferFunc(ctx, req)
	}
	return echo(req), nil
}

func (f *fakeModels) InferStream(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error {
	if f.StreamFunc != nil {
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.mu.Unlock()
		return f.StreamFunc(ctx, req, emit)
	}
	resp, err := f.Infer(ctx, req)
	if err != nil {
		return err
	}
	return emit(model.Reply{Response: resp, Final: true})
}

// echo answers every input back as an output named OUT_<input>.
func echo(req *inference.Request) *inference.Response {
	resp := &inference.Response{Model: req.Model, Version: "1"}
	for _, in := range req.Inputs {
		out := in
		out.Name = "OUT_" + in.Name
		out.Parameters = nil
		resp.Outputs = append(resp.Outputs, out)
	}
	return resp
}

func (f *fakeModels) lastRequest(t *testing.T) *inference.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("Infer was not called")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeModels) Metadata(name, version string) (*model.Metadata, error) {
	return f.MetaFunc(name, version)
}

func (f *fakeModels) ConfigJSON(name, version string) ([]byte, error) {
	return f.ConfigFunc(name, version)
}

func (f *fakeModels) Stats(name, version string) ([]model.Stats, error) {
	return f.StatsFunc(name, version)
}

func (f *fakeModels) Index(ctx context.Context, readyOnly bool) []model.IndexEntry {
	return f.IndexFunc(readyOnly)
}

func (f *fakeModels) Load(ctx context.Context, name string, params map[string]any) error {
	return f.record("load", name, params)
}

func (f *fakeModels) Unload(ctx context.Context, name string, params map[string]any) error {
	return f.record("unload", name, params)
}

func (f *fakeModels) record(verb, name string, params map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = append(f.loads, loadCall{verb: verb, name: name, params: params})
	return f.LoadErr
}

// fakeHealth serves a fixed snapshot.
type fakeHealth struct{ snap *health.Snapshot }

func (h fakeHealth) Snapshot() *health.Snapshot { return h.snap }

// readySnapshot is a healthy server with one ready model of two instances.
func readySnapshot() *health.Snapshot {
	return &health.Snapshot{
		Started: true, Strict: true, Escalate: true,
		Models: []health.ModelHealth{{
			Name: "add_sub", Version: "1", State: health.ModelStateReady, Ready: true,
			MinReady: 1, Expected: true,
			Instances: []health.InstanceHealth{
				{Name: "add_sub_0", State: health.StateReady, PID: 10},
				{Name: "add_sub_1", State: health.StateReady, PID: 11},
			},
		}},
	}
}

type testEnv struct {
	t      *testing.T
	models *fakeModels
	h      http.Handler
}

func newEnv(t *testing.T, snap *health.Snapshot, cfg Config) *testEnv {
	t.Helper()
	fm := &fakeModels{}
	if cfg.ServerName == "" {
		cfg.ServerName, cfg.ServerVersion = "vigil", "0.1.0"
	}
	return &testEnv{t: t, models: fm, h: NewHandler(fm, fakeHealth{snap}, cfg)}
}

// do sends one request through the handler.
func (e *testEnv) do(method, target string, body []byte, headers ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	return serve(e.t, e.h, method, target, body, headers...)
}

func serve(t *testing.T, h http.Handler, method, target string, body []byte, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decodeJSON decodes a response body, failing the test on malformed JSON.
func decodeJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("response body %q is not the expected JSON: %v", rec.Body.String(), err)
	}
	return v
}

// errorOf returns the "error" of a JSON error body, failing if it has none.
func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	body := decodeJSON[map[string]any](t, rec)
	msg, ok := body["error"].(string)
	if !ok || msg == "" || len(body) != 1 {
		t.Fatalf("error body = %s, want {\"error\": \"...\"}", rec.Body.String())
	}
	return msg
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
