package modelconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/tensor"
)

// validConfig is a valid config.pbtxt that test cases extend: prototext
// accepts fields in any order, and repeated fields append.
const validConfig = `backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
`

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	const file = "models/x/config.pbtxt"
	io := func(in, out string) string {
		return "backend: \"python\"\ninput [ { " + in + " } ]\noutput [ { " + out + " } ]\n"
	}
	const okIO = `name: "T" data_type: TYPE_FP32 dims: [ 4 ]`
	tests := []struct {
		name   string
		config string
		// want is the exact error message.
		want string
		// field is the *Error's Field.
		field string
	}{
		{
			name:   "misspelled top-level field",
			config: validConfig + "max_batch_size: 4\ndynamic_batchin { }\n",
			want:   file + `:5:1: unknown field "dynamic_batchin" (did you mean "dynamic_batching"?)`,
			field:  "dynamic_batchin",
		},
		{
			name:   "misspelled nested field",
			config: io(`name: "A" data_type: TYPE_FP32 dim: [ 1 ]`, okIO),
			want:   file + `:2:42: unknown field "dim" (did you mean "dims"?)`,
			field:  "dim",
		},
		{
			name:   "unknown field without a near name",
			config: validConfig + "flux_capacitor: 1\n",
			want:   file + `:4:1: unknown field "flux_capacitor"`,
			field:  "flux_capacitor",
		},
		{
			name:   "Triton field vigil does not implement",
			config: validConfig + "optimization { }\n",
			want:   file + `:4:1: unsupported field "optimization": vigil does not implement this Triton feature`,
			field:  "optimization",
		},
		{
			name:   "Triton input field vigil does not implement",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 1 ] is_shape_tensor: true`, okIO),
			want:   file + `:2:54: unsupported field "is_shape_tensor": vigil does not implement this Triton feature`,
			field:  "is_shape_tensor",
		},
		{
			name:   "image format needs three dims",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 1 ] format: FORMAT_NHWC`, okIO),
			want:   file + `: input[0] ("A").format: FORMAT_NHWC needs 3 dims (C, H, W in some order), got dims [1]`,
			field:  `input[0] ("A").format`,
		},
		{
			name: "warm-up sample naming an input the model lacks",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2 ]`, okIO) +
				`model_warmup [{ name: "w" batch_size: 1 inputs { key: "B" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } }]`,
			want:  file + `: model_warmup[0] ("w").inputs: "B" is not an input of the model`,
			field: `model_warmup[0] ("w").inputs`,
		},
		{
			name: "warm-up sample with the wrong dims",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2 ]`, okIO) +
				`model_warmup [{ name: "w" batch_size: 1 inputs { key: "A" value: { data_type: TYPE_FP32 dims: [ 3 ] random_data: true } } }]`,
			want:  file + `: model_warmup[0] ("w").inputs["A"].dims: [3] does not match the input's dims [2] (warm-up dims are concrete, each ≥ 1)`,
			field: `model_warmup[0] ("w").inputs["A"].dims`,
		},
		{
			name: "warm-up batch size of a model that does not batch",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2 ]`, okIO) +
				`model_warmup [{ name: "w" batch_size: 2 inputs { key: "A" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } }]`,
			want:  file + `: model_warmup[0] ("w").batch_size: must be between 1 and 1 (max_batch_size, or 1 for a model that does not batch), got 2`,
			field: `model_warmup[0] ("w").batch_size`,
		},
		{
			name:   "syntax error",
			config: "backend: \"python\"\ninput { dims: [ }\n",
			want:   file + `:2:17: syntax error: invalid scalar value: }`,
		},
		{
			name:   "unknown enum value",
			config: io(`name: "A" data_type: TYPE_FOO dims: [ 1 ]`, okIO),
			want:   file + `:2:32: data_type: invalid value for enum type: TYPE_FOO`,
			field:  "data_type",
		},
		{
			name:   "unknown enum number",
			config: io(`name: "A" data_type: 99 dims: [ 1 ]`, okIO),
			want:   file + `: input[0] ("A").data_type: unknown data type 99`,
			field:  `input[0] ("A").data_type`,
		},
		{
			name:   "dims not a number",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 1, x ]`, okIO),
			want:   file + `:2:53: dims: invalid value for int64 type: x`,
			field:  "dims",
		},
		{
			name:   "backend missing",
			config: strings.Replace(validConfig, `backend: "python"`, "", 1),
			want:   file + `: backend: missing: vigil serves Python models, set backend: "python"`,
			field:  "backend",
		},
		{
			name:   "backend not python",
			config: strings.Replace(validConfig, `"python"`, `"onnxruntime"`, 1),
			want:   file + `: backend: must be "python" (vigil serves Python models), got "onnxruntime"`,
			field:  "backend",
		},
		{
			name:   "platform set",
			config: validConfig + `platform: "tensorflow_savedmodel"`,
			want:   file + `: platform: must be empty (Python models set backend: "python" and no platform) or "ensemble", got "tensorflow_savedmodel"`,
			field:  "platform",
		},
		{
			name:   "negative max_batch_size",
			config: validConfig + "max_batch_size: -1",
			want:   file + `: max_batch_size: must be ≥ 0, got -1`,
			field:  "max_batch_size",
		},
		{
			name:   "no input",
			config: "backend: \"python\"\noutput [ { " + okIO + " } ]",
			want:   file + `: input: the model needs at least one input`,
			field:  "input",
		},
		{
			name:   "no output",
			config: "backend: \"python\"\ninput [ { " + okIO + " } ]",
			want:   file + `: output: the model needs at least one output`,
			field:  "output",
		},
		{
			name:   "input without name",
			config: io(`data_type: TYPE_FP32 dims: [ 1 ]`, okIO),
			want:   file + `: input[0].name: missing`,
			field:  "input[0].name",
		},
		{
			name:   "input without data_type",
			config: io(`name: "A" dims: [ 1 ]`, okIO),
			want:   file + `: input[0] ("A").data_type: missing (TYPE_INVALID)`,
			field:  `input[0] ("A").data_type`,
		},
		{
			name:   "input without dims",
			config: io(`name: "A" data_type: TYPE_FP32`, okIO),
			want:   file + `: input[0] ("A").dims: missing: give at least one dimension (use dims: [1] with reshape: { shape: [] } for a scalar)`,
			field:  `input[0] ("A").dims`,
		},
		{
			name:   "zero dimension",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2, 0 ]`, okIO),
			want:   file + `: input[0] ("A").dims[1]: must be ≥ 1 or -1 (variable), got 0`,
			field:  `input[0] ("A").dims[1]`,
		},
		{
			name:   "dimension below -1",
			config: io(okIO, `name: "B" data_type: TYPE_FP32 dims: [ -2 ]`),
			want:   file + `: output[0] ("B").dims[0]: must be ≥ 1 or -1 (variable), got -2`,
			field:  `output[0] ("B").dims[0]`,
		},
		{
			name:   "duplicate input",
			config: validConfig + `input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]`,
			want:   file + `: input[1].name: "IN" is already the name of input[0]`,
			field:  "input[1].name",
		},
		{
			name:   "duplicate output",
			config: validConfig + `output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]`,
			want:   file + `: output[1].name: "OUT" is already the name of output[0]`,
			field:  "output[1].name",
		},
		{
			name:   "reshape with another element count",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2, 3 ] reshape: { shape: [ 5 ] }`, okIO),
			want:   file + `: input[0] ("A").reshape: dims [2 3] and reshape [5] have different element counts`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "reshape with another variable dimension count",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape: { shape: [ 4 ] }`, okIO),
			want:   file + `: input[0] ("A").reshape: dims [-1 4] and reshape [4] have different numbers of variable (-1) dimensions`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "reshape with another trunk",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2, -1, 6 ] reshape: { shape: [ 3, -1, 4 ] }`, okIO),
			want:   file + `: input[0] ("A").reshape: dims [2 -1 6] and reshape [3 -1 4] have different element counts`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "reshape with zero",
			config: io(okIO, `name: "B" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ 0 ] }`),
			want:   file + `: output[0] ("B").reshape.shape[0]: must be ≥ 1 or -1 (variable), got 0`,
			field:  `output[0] ("B").reshape.shape[0]`,
		},
		{
			name:   "empty reshape without batching",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] }`, okIO),
			want:   file + `: input[0] ("A").reshape: an empty reshape (a scalar) needs max_batch_size > 0`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "empty reshape of several elements",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ ] }`, okIO) + "max_batch_size: 2",
			want:   file + `: input[0] ("A").reshape: an empty reshape (a scalar) needs dims with exactly one element, got dims [2]`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "reshape overflow",
			config: io(`name: "A" data_type: TYPE_FP32 dims: [ 4611686018427387904, 4 ] reshape: { shape: [ 1 ] }`, okIO),
			want:   file + `: input[0] ("A").reshape: dims [4611686018427387904 4] or reshape [1] has too many elements`,
			field:  `input[0] ("A").reshape`,
		},
		{
			name:   "label file outside the model directory",
			config: io(okIO, `name: "B" data_type: TYPE_FP32 dims: [ 1 ] label_filename: "../../secret"`),
			want:   file + `: output[0].label_filename: "../../secret" must be a plain file name, without directories`,
			field:  "output[0].label_filename",
		},
		{
			name:   "GPU instances",
			config: validConfig + "instance_group [ { kind: KIND_GPU } ]",
			want:   file + `: instance_group[0].kind: GPU instances are not supported (KIND_GPU); use KIND_CPU`,
			field:  "instance_group[0].kind",
		},
		{
			name:   "GPU list",
			config: validConfig + "instance_group [ { count: 1 }, { gpus: [ 0 ] } ]",
			want:   file + `: instance_group[1].gpus: GPU instances are not supported; remove gpus`,
			field:  "instance_group[1].gpus",
		},
		{
			name:   "unknown kind number",
			config: validConfig + "instance_group [ { kind: 7 } ]",
			want:   file + `: instance_group[0].kind: unknown kind 7`,
			field:  "instance_group[0].kind",
		},
		{
			name:   "zero count",
			config: validConfig + "instance_group [ { count: 0 } ]",
			want:   file + `: instance_group[0].count: must be ≥ 1, got 0`,
			field:  "instance_group[0].count",
		},
		{
			name:   "negative count",
			config: validConfig + "instance_group [ { count: 1 }, { count: -3 } ]",
			want:   file + `: instance_group[1].count: must be ≥ 1, got -3`,
			field:  "instance_group[1].count",
		},
		{
			name:   "too many instances",
			config: validConfig + "instance_group [ { count: 1000 }, { count: 25 } ]",
			want:   file + `: instance_group[1].count: the model would have more than 1024 instances`,
			field:  "instance_group[1].count",
		},
		{
			name:   "dynamic batching without batching",
			config: validConfig + "dynamic_batching { }",
			want:   file + `: dynamic_batching: needs max_batch_size > 0 (the model does not batch)`,
			field:  "dynamic_batching",
		},
		{
			name:   "preferred batch size above max",
			config: validConfig + "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 2, 8 ] }",
			want:   file + `: dynamic_batching.preferred_batch_size[1]: must be between 1 and max_batch_size (4), got 8`,
			field:  "dynamic_batching.preferred_batch_size[1]",
		},
		{
			name:   "preferred batch size zero",
			config: validConfig + "max_batch_size: 4 dynamic_batching { preferred_batch_size: 0 }",
			want:   file + `: dynamic_batching.preferred_batch_size[0]: must be between 1 and max_batch_size (4), got 0`,
			field:  "dynamic_batching.preferred_batch_size[0]",
		},
		{
			name:   "latest zero versions",
			config: validConfig + "version_policy { latest { num_versions: 0 } }",
			want:   file + `: version_policy.latest.num_versions: must be ≥ 1, got 0`,
			field:  "version_policy.latest.num_versions",
		},
		{
			name:   "two version policies",
			config: validConfig + "version_policy { latest { } all { } }",
			want:   file + `:4:29: error parsing "all", oneof inference.ModelVersionPolicy.policy_choice is already set`,
		},
		{
			name:   "specific without versions",
			config: validConfig + "version_policy { specific { } }",
			want:   file + `: version_policy.specific.versions: list at least one version`,
			field:  "version_policy.specific.versions",
		},
		{
			name:   "specific version zero",
			config: validConfig + "version_policy { specific { versions: [ 1, 0 ] } }",
			want:   file + `: version_policy.specific.versions[1]: must be ≥ 1, got 0`,
			field:  "version_policy.specific.versions[1]",
		},
		{
			name:   "specific version twice",
			config: validConfig + "version_policy { specific { versions: [ 2, 2 ] } }",
			want:   file + `: version_policy.specific.versions[1]: version 2 is listed twice`,
			field:  "version_policy.specific.versions[1]",
		},
		{
			name:   "model file in another directory",
			config: validConfig + `default_model_filename: "../model.py"`,
			want:   file + `: default_model_filename: "../model.py" must be a plain file name, without directories`,
			field:  "default_model_filename",
		},
		{
			name:   "model file dot-dot",
			config: validConfig + `default_model_filename: ".."`,
			want:   file + `: default_model_filename: ".." is not a file name`,
			field:  "default_model_filename",
		},
		{
			name:   "empty parameter key",
			config: validConfig + `parameters { key: "" value { string_value: "x" } }`,
			want:   file + `: parameters: a parameter key is empty`,
			field:  "parameters",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ParseConfig([]byte(tt.config), file)
			if err == nil {
				t.Fatalf("ParseConfig succeeded with %v, want error %q", cfg, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("ParseConfig error\n got: %s\nwant: %s", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig error %#v is not an *Error", err)
			}
			if ce.File != file || ce.Field != tt.field {
				t.Errorf("*Error File, Field = %q, %q, want %q, %q", ce.File, ce.Field, file, tt.field)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config string
		check  func(t *testing.T, cfg *inferencepb.ModelConfig)
	}{
		{
			name:   "minimal",
			config: validConfig,
			check: func(t *testing.T, cfg *inferencepb.ModelConfig) {
				if cfg.GetName() != "" {
					t.Errorf("Name = %q, want empty (Load fills it)", cfg.GetName())
				}
				groups := cfg.GetInstanceGroup()
				if len(groups) != 1 || groups[0].GetCount() != 1 || groups[0].GetKind() != inferencepb.ModelInstanceGroup_KIND_CPU || groups[0].GetName() != "" {
					t.Errorf("InstanceGroup = %v, want one unnamed group {count: 1, kind: KIND_CPU}", groups)
				}
				if n := cfg.GetVersionPolicy().GetLatest().GetNumVersions(); n != 1 {
					t.Errorf("version_policy.latest.num_versions = %d, want 1", n)
				}
				if cfg.GetModelTransactionPolicy() == nil || cfg.GetModelTransactionPolicy().GetDecoupled() {
					t.Errorf("ModelTransactionPolicy = %v, want {decoupled: false}", cfg.GetModelTransactionPolicy())
				}
				if cfg.GetDefaultModelFilename() != "model.py" {
					t.Errorf("DefaultModelFilename = %q, want model.py", cfg.GetDefaultModelFilename())
				}
				if cfg.GetDynamicBatching() != nil {
					t.Errorf("DynamicBatching = %v, want unset", cfg.GetDynamicBatching())
				}
			},
		},
		{
			name:   "group defaults and names",
			config: validConfig + `name: "m" instance_group [ { kind: KIND_AUTO }, { name: "mine" count: 3 kind: KIND_MODEL } ]`,
			check: func(t *testing.T, cfg *inferencepb.ModelConfig) {
				g := cfg.GetInstanceGroup()
				if len(g) != 2 {
					t.Fatalf("InstanceGroup = %v, want 2 groups", g)
				}
				if g[0].GetName() != "m_0" || g[0].GetCount() != 1 || g[0].GetKind() != inferencepb.ModelInstanceGroup_KIND_CPU {
					t.Errorf("group 0 = %v, want {name: m_0, count: 1, kind: KIND_CPU}", g[0])
				}
				if g[1].GetName() != "mine" || g[1].GetCount() != 3 || g[1].GetKind() != inferencepb.ModelInstanceGroup_KIND_MODEL {
					t.Errorf("group 1 = %v, want {name: mine, count: 3, kind: KIND_MODEL}", g[1])
				}
			},
		},
		{
			name:   "latest without num_versions",
			config: validConfig + "version_policy { latest { } }",
			check: func(t *testing.T, cfg *inferencepb.ModelConfig) {
				if n := cfg.GetVersionPolicy().GetLatest().GetNumVersions(); n != 1 {
					t.Errorf("num_versions = %d, want 1", n)
				}
			},
		},
		{
			name:   "empty version policy",
			config: validConfig + "version_policy { }",
			check: func(t *testing.T, cfg *inferencepb.ModelConfig) {
				if n := cfg.GetVersionPolicy().GetLatest().GetNumVersions(); n != 1 {
					t.Errorf("num_versions = %d, want 1", n)
				}
			},
		},
		{
			name: "scalar by empty reshape, variable reshape, numeric enum",
			config: `backend: "python" max_batch_size: 8
input [ { name: "S" data_type: 11 dims: [ 1 ] reshape: { shape: [ ] } },
        { name: "V" data_type: TYPE_INT8 dims: [ 2, 4, -1, 6 ] reshape: { shape: [ 8, -1, 1, 6 ] } } ]
output [ { name: "O" data_type: TYPE_BF16 dims: [ -1 ] } ]
# a comment
parameters { key: "p" value { } }`,
			check: func(t *testing.T, cfg *inferencepb.ModelConfig) {
				if dt := cfg.GetInput()[0].GetDataType(); dt != inferencepb.DataType_TYPE_FP32 {
					t.Errorf("data_type 11 = %v, want TYPE_FP32", dt)
				}
				if p := cfg.GetParameters()["p"]; p == nil || p.GetStringValue() != "" {
					t.Errorf("parameter p = %v, want an empty string value", p)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ParseConfig([]byte(tt.config), "config.pbtxt")
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestDatatypeOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   inferencepb.DataType
		want tensor.Datatype
	}{
		{inferencepb.DataType_TYPE_INVALID, ""},
		{inferencepb.DataType_TYPE_BOOL, tensor.Bool},
		{inferencepb.DataType_TYPE_UINT8, tensor.Uint8},
		{inferencepb.DataType_TYPE_UINT16, tensor.Uint16},
		{inferencepb.DataType_TYPE_UINT32, tensor.Uint32},
		{inferencepb.DataType_TYPE_UINT64, tensor.Uint64},
		{inferencepb.DataType_TYPE_INT8, tensor.Int8},
		{inferencepb.DataType_TYPE_INT16, tensor.Int16},
		{inferencepb.DataType_TYPE_INT32, tensor.Int32},
		{inferencepb.DataType_TYPE_INT64, tensor.Int64},
		{inferencepb.DataType_TYPE_FP16, tensor.FP16},
		{inferencepb.DataType_TYPE_FP32, tensor.FP32},
		{inferencepb.DataType_TYPE_FP64, tensor.FP64},
		{inferencepb.DataType_TYPE_STRING, tensor.Bytes},
		{inferencepb.DataType_TYPE_BF16, tensor.BF16},
		{inferencepb.DataType(99), ""},
	}
	for _, tt := range tests {
		if got := DatatypeOf(tt.in); got != tt.want {
			t.Errorf("DatatypeOf(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Every enum value but TYPE_INVALID maps to a protocol datatype.
	for n := range inferencepb.DataType_name {
		dt := inferencepb.DataType(n)
		if dt != inferencepb.DataType_TYPE_INVALID && !DatatypeOf(dt).Valid() {
			t.Errorf("DatatypeOf(%v) = %q is not a protocol datatype", dt, DatatypeOf(dt))
		}
	}
}
