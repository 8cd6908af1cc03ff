package rest

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
)

// TestInferSequenceParameters checks that the reserved sequence parameters
// become the request's Sequence, as tritonclient sends them, and leave
// Parameters.
func TestInferSequenceParameters(t *testing.T) {
	input := `"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1]}]`
	for _, tc := range []struct {
		params string
		want   inference.Sequence
		rest   map[string]any
	}{
		{`{"sequence_id":1000,"sequence_start":true,"sequence_end":false}`,
			inference.Sequence{ID: inference.NumericID(1000), Start: true}, nil},
		{`{"sequence_id":18446744073709551615,"sequence_end":true,"tag":"x"}`,
			inference.Sequence{ID: inference.NumericID(1<<64 - 1), End: true}, map[string]any{"tag": "x"}},
		{`{"sequence_id":"5e2f-uuid","sequence_start":false,"sequence_end":false}`,
			inference.Sequence{ID: inference.StringID("5e2f-uuid")}, nil},
		{`{"sequence_id":0}`, inference.Sequence{}, nil},
		{`{"tag":1}`, inference.Sequence{}, map[string]any{"tag": int64(1)}},
	} {
		e := newEnv(t, readySnapshot(), Config{})
		rec := e.do("POST", "/v2/models/m/infer", []byte(`{"parameters":`+tc.params+`,`+input+`}`))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.params, rec.Code, rec.Body)
		}
		got := e.models.lastRequest(t)
		if got.Sequence != tc.want || !reflect.DeepEqual(got.Parameters, tc.rest) {
			t.Errorf("%s: sequence %+v parameters %v, want %+v %v", tc.params, got.Sequence, got.Parameters, tc.want, tc.rest)
		}
	}
}

func TestInferSequenceParametersInvalid(t *testing.T) {
	input := `"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1]}]`
	for _, tc := range []struct{ params, want string }{
		{`{"sequence_id":-1}`, "Unable to parse 'sequence_id'"},
		{`{"sequence_id":1.5}`, "Unable to parse 'sequence_id'"},
		{`{"sequence_id":true}`, "Unable to parse 'sequence_id'"},
		{`{"sequence_id":1,"sequence_start":1}`, "Unable to parse 'sequence_start'"},
		{`{"sequence_id":1,"sequence_end":"yes"}`, "Unable to parse 'sequence_end'"},
		{`{"sequence_id":"` + strings.Repeat("x", 129) + `"}`, "string correlation ID cannot be longer than 128 characters"},
	} {
		e := newEnv(t, readySnapshot(), Config{})
		rec := e.do("POST", "/v2/models/m/infer", []byte(`{"parameters":`+tc.params+`,`+input+`}`))
		if msg := errorOf(t, rec); rec.Code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.params, rec.Code, msg, tc.want)
		}
	}
}
