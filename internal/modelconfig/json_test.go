package modelconfig

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestToJSON checks the properties tritonclient relies on: integers are
// JSON numbers (cfg["input"][0]["dims"] == [4]), enums are names, strings
// stay strings even when they look like numbers, unset messages are absent.
func TestToJSON(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(`name: "m" backend: "python" max_batch_size: 4
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "7" data_type: TYPE_STRING dims: [ -1, 2 ] reshape: { shape: [ -1, 1, 2 ] } } ]
dynamic_batching { max_queue_delay_microseconds: 18446744073709551615 }
version_policy { specific { versions: [ 9007199254740993 ] } }
parameters { key: "n" value { string_value: "12" } }`), "config.pbtxt")
	if err != nil {
		t.Fatal(err)
	}
	out, err := ToJSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("ToJSON output is not JSON: %v\n%s", err, out)
	}
	tests := []struct {
		path []any
		want any
	}{
		{[]any{"input", 0, "dims"}, []any{json.Number("4")}},
		{[]any{"input", 0, "data_type"}, "TYPE_FP32"},
		{[]any{"input", 0, "optional"}, false},
		{[]any{"output", 0, "name"}, "7"},
		{[]any{"output", 0, "dims"}, []any{json.Number("-1"), json.Number("2")}},
		{[]any{"output", 0, "reshape", "shape"}, []any{json.Number("-1"), json.Number("1"), json.Number("2")}},
		{[]any{"max_batch_size"}, json.Number("4")},
		// Beyond float64 precision: kept exact.
		{[]any{"dynamic_batching", "max_queue_delay_microseconds"}, json.Number("18446744073709551615")},
		{[]any{"version_policy", "specific", "versions"}, []any{json.Number("9007199254740993")}},
		{[]any{"parameters", "n", "string_value"}, "12"},
		{[]any{"instance_group", 0, "kind"}, "KIND_CPU"},
		{[]any{"instance_group", 0, "count"}, json.Number("1")},
		{[]any{"instance_group", 0, "gpus"}, []any{}},
		{[]any{"model_transaction_policy", "decoupled"}, false},
		{[]any{"platform"}, ""},
	}
	for _, tt := range tests {
		if v := lookup(got, tt.path); !reflect.DeepEqual(v, tt.want) {
			t.Errorf("%v = %#v, want %#v", tt.path, v, tt.want)
		}
	}
	if _, ok := got["input"].([]any)[0].(map[string]any)["reshape"]; ok {
		t.Errorf("input[0] has a reshape member, want it left out when unset:\n%s", out)
	}

	// Without dynamic batching, the member is absent rather than null.
	cfg.DynamicBatching = nil
	out, err = ToJSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if v, ok := m["dynamic_batching"]; ok {
		t.Errorf("dynamic_batching = %v, want absent", v)
	}
}

func lookup(v any, path []any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}
