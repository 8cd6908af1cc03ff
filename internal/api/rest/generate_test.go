package rest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/tensor"
)

func TestGenerateShape(t *testing.T) {
	for _, c := range []struct {
		dims []int64
		n    int64
		want []int64
		ok   bool
	}{
		{[]int64{-1}, 4, []int64{4}, true},
		{[]int64{1}, 1, []int64{1}, true},
		{[]int64{1}, 2, nil, false},
		{[]int64{-1, 1}, 1, []int64{1, 1}, true}, // batch -1 becomes 1
		{[]int64{-1, 16}, 16, []int64{1, 16}, true},
		{[]int64{-1, -1}, 3, []int64{1, 3}, true}, // the innermost -1 takes the count
		{[]int64{-1, 4}, 6, nil, false},
	} {
		got, ok := generateShape(c.dims, c.n)
		if ok != c.ok || (ok && !equalShape(got, c.want)) {
			t.Errorf("generateShape(%v, %d) = %v, %v; want %v, %v", c.dims, c.n, got, ok, c.want, c.ok)
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecodeGenerateMapsInputsAndParameters(t *testing.T) {
	md := &model.Metadata{Inputs: []model.TensorMetadata{
		{Name: "text_input", Datatype: tensor.Bytes, Shape: []int64{1}},
		{Name: "max_tokens", Datatype: tensor.Int32, Shape: []int64{1}},
	}}
	req, err := decodeGenerate([]byte(`{"id":"7","text_input":"hi","parameters":{"max_tokens":5,"temperature":0.5,"stream":true}}`), md)
	if err != nil {
		t.Fatal(err)
	}
	if req.ID != "7" || len(req.Inputs) != 2 {
		t.Fatalf("request %+v", req)
	}
	if req.Parameters["temperature"] != 0.5 || req.Parameters["stream"] != true || req.Parameters["id"] != "7" {
		t.Errorf("parameters %v", req.Parameters)
	}
	for _, c := range []struct{ body, want string }{
		{`{"id":7}`, "Unable to parse 'id'"},
		{`{"x":{"a":1}}`, "parameter 'x' has invalid type. It should be either 'int', 'bool', or 'string'."},
		{`{"max_tokens":[1,2]}`, "The schema can not convert input 'max_tokens' to tensor with proper shape"},
		{`{"max_tokens":"a"}`, "input 'max_tokens' element 0"},
		{`[1]`, "must be a JSON object"},
	} {
		if _, err := decodeGenerate([]byte(c.body), md); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.body, err, c.want)
		}
	}
	if _, err := decodeGenerate([]byte(`{}`), &model.Metadata{Inputs: []model.TensorMetadata{{Name: "parameters"}}}); err == nil {
		t.Error("an input named parameters was accepted")
	}
}

func TestGenerateResponseIsFlatAndSorted(t *testing.T) {
	out := tensor.Tensor{Name: "text_output", Datatype: tensor.Bytes, Shape: []int64{1}, Data: tensor.AppendBytesElement(nil, []byte("hello"))}
	many := tensor.Tensor{Name: "B", Datatype: tensor.Int32, Shape: []int64{2}, Data: []byte{1, 0, 0, 0, 2, 0, 0, 0}}
	b, err := generateResponse(&inference.Request{Model: "m", Version: ""},
		&inference.Response{Model: "m", Version: "1", Parameters: map[string]any{"model_name": "spoof", "p": true}, Outputs: []tensor.Tensor{out, many}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"B":[1,2],"model_name":"m","model_version":"1","p":true,"text_output":"hello"}`; string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
}

// failingWriter is a client connection that has gone: every write fails.
type failingWriter struct{ header http.Header }

func (w *failingWriter) Header() http.Header       { return w.header }
func (w *failingWriter) WriteHeader(int)           {}
func (w *failingWriter) Write([]byte) (int, error) { return 0, syscall.EPIPE }
func (w *failingWriter) Flush()                    {}

// An event the client's connection does not take ends the stream as a
// cancellation (the client went away), not as a model error, whether the
// server sees the closed connection through the write or through the
// request's context.
func TestGenerateStreamWriteFailureIsACancellation(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	e.models.MetaFunc = func(name, _ string) (*model.Metadata, error) {
		return &model.Metadata{Name: name, Versions: []string{"1"},
			Inputs: []model.TensorMetadata{{Name: "text_input", Datatype: "BYTES", Shape: []int64{1}}}}, nil
	}
	var emitted error
	e.models.StreamFunc = func(_ context.Context, req *inference.Request, emit func(model.Reply) error) error {
		emitted = emit(model.Reply{Response: &inference.Response{Model: req.Model, Version: "1"}})
		return emitted
	}
	req := httptest.NewRequest(http.MethodPost, "/v2/models/m/generate_stream", strings.NewReader(`{"text_input":"x"}`))
	e.h.ServeHTTP(&failingWriter{header: http.Header{}}, req)
	if emitted == nil || apierr.CodeOf(emitted) != apierr.Cancelled || !errors.Is(emitted, syscall.EPIPE) {
		t.Fatalf("emit returned %v, want a cancellation wrapping the write error", emitted)
	}
}
