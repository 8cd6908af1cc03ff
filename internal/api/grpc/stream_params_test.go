package grpc

import (
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
)

func TestTakeEmptyFinal(t *testing.T) {
	req := &inference.Request{Parameters: map[string]any{"triton_enable_empty_final_response": true, "other": 1}}
	on, err := takeEmptyFinal(req)
	if err != nil || !on {
		t.Fatalf("takeEmptyFinal = %v, %v", on, err)
	}
	if _, ok := req.Parameters["triton_enable_empty_final_response"]; ok || req.Parameters["other"] != 1 {
		t.Errorf("parameters left %v, want only other", req.Parameters)
	}
	for p, want := range map[string]any{
		"invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param.":     map[string]any{"triton_enable_empty_final_response": "yes"},
		"Only the following keys starting with 'triton_' are allowed: triton_enable_empty_final_response": map[string]any{"triton_x": true},
	} {
		_, err := takeEmptyFinal(&inference.Request{Parameters: want.(map[string]any)})
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%v: err = %v, want %q", want, err, p)
		}
	}
	if on, err := takeEmptyFinal(&inference.Request{}); on || err != nil {
		t.Errorf("no parameters: %v, %v", on, err)
	}
}
