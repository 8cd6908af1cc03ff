package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/model"
)

func TestServerMetadata(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{ServerName: "vigil", ServerVersion: "1.2.3", Extensions: []string{"binary_tensor_data", "statistics"}})
	for _, path := range []string{"/v2", "/v2/"} {
		rec := e.do("GET", path, nil)
		want := `{"name":"vigil","version":"1.2.3","extensions":["binary_tensor_data","statistics"]}`
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("GET %s = %d %s, want %s", path, rec.Code, rec.Body, want)
		}
	}
	rec := newEnv(t, readySnapshot(), Config{}).do("GET", "/v2", nil)
	if got := decodeJSON[serverMetadataBody](t, rec); got.Extensions == nil {
		t.Errorf("extensions = null, want []")
	}
}

func TestModelMetadata(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	var gotName, gotVersion string
	e.models.MetaFunc = func(name, version string) (*model.Metadata, error) {
		gotName, gotVersion = name, version
		if name != "add_sub" {
			return nil, apierr.New(apierr.NotFound, "unknown model %q", name)
		}
		return &model.Metadata{
			Name: "add_sub", Versions: []string{"1", "2"}, Platform: "python",
			Inputs:  []model.TensorMetadata{{Name: "INPUT0", Datatype: "FP32", Shape: []int64{-1, 4}}},
			Outputs: []model.TensorMetadata{{Name: "OUTPUT0", Datatype: "FP32"}},
		}, nil
	}
	rec := e.do("GET", "/v2/models/add_sub/versions/2", nil)
	want := `{"name":"add_sub","versions":["1","2"],"platform":"python",` +
		`"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[]}]}`
	if rec.Code != 200 || rec.Body.String() != want {
		t.Errorf("metadata = %d %s, want %s", rec.Code, rec.Body, want)
	}
	if gotName != "add_sub" || gotVersion != "2" {
		t.Errorf("Metadata(%q, %q), want (add_sub, 2)", gotName, gotVersion)
	}
	if rec := e.do("GET", "/v2/models/add_sub", nil); rec.Code != 200 || gotVersion != "" {
		t.Errorf("unversioned metadata = %d, version %q", rec.Code, gotVersion)
	}
	rec = e.do("GET", "/v2/models/nope", nil)
	if rec.Code != 404 || errorOf(t, rec) != `unknown model "nope"` {
		t.Errorf("unknown model = %d %s", rec.Code, rec.Body)
	}
}

func TestModelConfig(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	cfg := []byte(`{"name":"add_sub","backend":"python","max_batch_size":8}`)
	e.models.ConfigFunc = func(name, version string) ([]byte, error) {
		if version == "9" {
			return nil, apierr.New(apierr.NotFound, "model %q has no version %s", name, version)
		}
		return cfg, nil
	}
	for _, path := range []string{"/v2/models/add_sub/config", "/v2/models/add_sub/versions/1/config"} {
		rec := e.do("GET", path, nil)
		if rec.Code != 200 || rec.Body.String() != string(cfg) || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s", path, rec.Code, rec.Body)
		}
	}
	if rec := e.do("GET", "/v2/models/add_sub/versions/9/config", nil); rec.Code != 404 {
		t.Errorf("config of unknown version = %d", rec.Code)
	}
}

func TestModelStats(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	last := time.UnixMilli(1767225600123)
	var calls []string
	e.models.StatsFunc = func(name, version string) ([]model.Stats, error) {
		calls = append(calls, name+"@"+version)
		return []model.Stats{{
			Name: "add_sub", Version: "1", Counters: model.Counters{
				LastInference: last, InferenceCount: 64, ExecutionCount: 2,
				Success: model.Duration{Count: 2, Total: 3 * time.Millisecond},
				Fail:    model.Duration{Count: 1, Total: time.Microsecond},
				Queue:   model.Duration{Count: 2, Total: 5 * time.Nanosecond},
			},
		}, {Name: "identity", Version: "1"}}, nil
	}
	want := `{"model_stats":[{"name":"add_sub","version":"1","last_inference":1767225600123,"inference_count":64,"execution_count":2,` +
		`"inference_stats":{"success":{"count":2,"ns":3000000},"fail":{"count":1,"ns":1000},"queue":{"count":2,"ns":5},` +
		`"compute_input":{"count":0,"ns":0},"compute_infer":{"count":0,"ns":0},"compute_output":{"count":0,"ns":0},` +
		`"cache_hit":{"count":0,"ns":0},"cache_miss":{"count":0,"ns":0}},"batch_stats":[]},` +
		`{"name":"identity","version":"1","last_inference":0,"inference_count":0,"execution_count":0,` +
		`"inference_stats":{"success":{"count":0,"ns":0},"fail":{"count":0,"ns":0},"queue":{"count":0,"ns":0},` +
		`"compute_input":{"count":0,"ns":0},"compute_infer":{"count":0,"ns":0},"compute_output":{"count":0,"ns":0},` +
		`"cache_hit":{"count":0,"ns":0},"cache_miss":{"count":0,"ns":0}},"batch_stats":[]}]}`
	for _, path := range []string{"/v2/models/stats", "/v2/models/add_sub/stats", "/v2/models/add_sub/versions/1/stats"} {
		rec := e.do("GET", path, nil)
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("GET %s = %d\n%s\nwant\n%s", path, rec.Code, rec.Body, want)
		}
	}
	if got := strings.Join(calls, " "); got != "@ add_sub@ add_sub@1" {
		t.Errorf("Stats calls = %q", got)
	}
}

// TestErrorClasses checks that every apierr class reaches the client with
// the status of the shared table, a JSON body and, for 503, Retry-After.
func TestErrorClasses(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
		wantRetry  string
	}{
		{apierr.New(apierr.InvalidArgument, "bad"), 400, ""},
		{apierr.New(apierr.NotFound, "unknown model"), 404, ""},
		{apierr.Unavailablef("model add_sub is not ready"), 503, "1"},
		{&apierr.Error{Code: apierr.Unavailable, Msg: "draining", RetryAfter: 2500 * time.Millisecond}, 503, "3"},
		{apierr.New(apierr.ResourceExhausted, "queue full"), 503, "1"},
		{apierr.New(apierr.Unsupported, "CUDA shared memory is not supported"), 501, ""},
		{apierr.New(apierr.Unknown, "TritonError.UNKNOWN from a model"), 400, ""},
		{apierr.New(apierr.AlreadyExists, "shared memory region 'r' already in manager"), 400, ""},
		{apierr.New(apierr.DeadlineExceeded, "execute timed out"), 504, ""},
		{fmt.Errorf("scheduler: %w", context.DeadlineExceeded), 504, ""},
		{apierr.New(apierr.Internal, "ZeroDivisionError: division by zero"), 500, ""},
		{errors.New("unclassified"), 500, ""},
		{apierr.New(apierr.TooLarge, "too big"), 413, ""},
	}
	for _, tt := range tests {
		e := newEnv(t, readySnapshot(), Config{})
		e.models.MetaFunc = func(string, string) (*model.Metadata, error) { return nil, tt.err }
		rec := e.do("GET", "/v2/models/add_sub", nil)
		if rec.Code != tt.wantStatus || rec.Header().Get("Retry-After") != tt.wantRetry {
			t.Errorf("%v: status %d Retry-After %q, want %d %q", tt.err, rec.Code, rec.Header().Get("Retry-After"), tt.wantStatus, tt.wantRetry)
		}
		if msg := errorOf(t, rec); msg != tt.err.Error() {
			t.Errorf("%v: error %q, want the error's message", tt.err, msg)
		}
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	for _, tc := range []struct{ method, path string }{
		{"GET", "/nope"}, {"GET", "/v3"}, {"GET", "/v2/models/add_sub/versions/1/bogus"}, {"POST", "/v2/repository/x/index"},
	} {
		rec := e.do(tc.method, tc.path, nil)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s %s = %d, want 404", tc.method, tc.path, rec.Code)
		}
		errorOf(t, rec)
	}
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/v2/models/add_sub/infer", "POST"},
		{"PUT", "/v2/models/add_sub/versions/1/infer", "POST"},
		{"POST", "/v2/health/live", "GET, HEAD"},
		{"DELETE", "/v2/models/add_sub", "GET, HEAD"},
		{"GET", "/v2/repository/index", "POST"},
	} {
		rec := e.do(tc.method, tc.path, nil)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d Allow %q, want 405 Allow %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.allow)
		}
		errorOf(t, rec)
	}
}
